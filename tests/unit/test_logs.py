import json
import logging

import pytest
import structlog

from engram_voice import logs
from engram_voice.credentials import Secret
from engram_voice.logs import REDACTED, configure_logging, redact_text


@pytest.mark.parametrize(
    "secret",
    [
        "ek_abcdef1234567890",
        "sk-proj-abcdefghijkl",
        "Bearer abcdefghijklmnop.qrs",
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    ],
)
def test_credential_shaped_text_is_redacted(secret: str) -> None:
    """Ephemeral keys, API keys, bearer tokens and JWTs are scrubbed from free text."""
    text = redact_text(f"failed with {secret} at the end")
    assert secret not in text
    assert REDACTED in text


def test_query_string_secrets_are_redacted_but_keys_kept() -> None:
    """A key=value secret in a URL keeps its name and loses its value."""
    text = redact_text("GET /x?api-key=supersecretvalue&x=1")
    assert "supersecretvalue" not in text
    assert "api-key=" in text


def _redact_every_pattern(text: str) -> str:
    """Redact without the fast path: substitute every pattern in turn."""
    for pattern in logs._SECRET_PATTERNS:
        if pattern.groups == 2:
            text = pattern.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
        else:
            text = pattern.sub(REDACTED, text)
    return text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "realtime.session_minted",
        "vs_0123456789abcdef0123456789abcdef",
        "00000000-0000-0000-0000-000000000001",
        "ek_abcdef1234567890",
        "EK_ABCDEF1234567890",
        "xek_abcdef1234567890",
        "sk-proj-abcdefghijkl",
        "BEARER abcdefghijklmnop",
        "bearer short",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.",
        "GET /x?API-KEY=supersecretvalue&Sig=abcdef&token=12345",
        "key=short",
        "Token=abcdefgh and ek_abcdef1234567890 and eyJa.eyJb.c",
        "élan ünïcode Bearer ééééééééé",
    ],
)
def test_the_fast_path_redacts_exactly_like_every_pattern(text: str) -> None:
    """Checking for any secret first never changes what redaction returns."""
    assert redact_text(text) == _redact_every_pattern(text)


def test_secret_wrapper_never_prints_its_value() -> None:
    """repr, str and format of a Secret hide the value."""
    secret = Secret("hunter2-very-secret")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in f"{secret}"
    assert "hunter2" not in str(secret)
    assert secret.reveal() == "hunter2-very-secret"


def test_json_log_lines_redact_secret_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """A production log line is one JSON object with secret-named fields replaced."""
    configure_logging(level="INFO", json=True)
    structlog.get_logger("t").info(
        "realtime.test_event", api_key="abc123secret", detail="token ek_zzzzzzzzzz", agent="elena"
    )
    line = capsys.readouterr().err.strip().splitlines()[-1]
    event = json.loads(line)
    assert event["event"] == "realtime.test_event"
    assert event["api_key"] == REDACTED
    assert "ek_zzzzzzzzzz" not in line
    assert event["agent"] == "elena"
    logging.getLogger().handlers.clear()


def test_events_below_the_level_are_dropped_before_the_pipeline(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """At WARNING an info event prints nothing and never reaches redaction or rendering."""
    from engram_voice import logs  # noqa: PLC0415 - the module whose processor is counted

    seen: list[str] = []
    original = logs.redact_event

    def counting_redact(logger: object, method: str, event: dict[str, object]) -> object:
        seen.append(str(event.get("event")))
        return original(logger, method, event)  # type: ignore[arg-type]

    monkeypatch.setattr(logs, "redact_event", counting_redact)
    configure_logging(level="WARNING", json=True)
    try:
        structlog.get_logger("t").info("realtime.session_minted", agent="elena")
        structlog.get_logger("t").warning("realtime.endpoint_failed", outcome="timeout")
        lines = capsys.readouterr().err.strip().splitlines()
    finally:
        logging.getLogger().handlers.clear()
    assert seen == ["realtime.endpoint_failed"]
    assert [json.loads(line)["event"] for line in lines] == ["realtime.endpoint_failed"]


def test_console_format_renders_an_exception_as_a_plain_redacted_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The console renderer prints the traceback as text, no rich, secrets still redacted."""
    configure_logging(level="INFO", json=False)
    try:
        try:
            raise KeyError("token=abcdefsecret")  # noqa: TRY301 - the exception under test
        except KeyError:
            structlog.get_logger("t").exception("http.unexpected_error")
        err = capsys.readouterr().err
    finally:
        logging.getLogger().handlers.clear()
    assert "http.unexpected_error" in err
    assert "Traceback (most recent call last):" in err
    assert "KeyError" in err
    assert "abcdefsecret" not in err
