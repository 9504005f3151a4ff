"""The one error mapping logs whose failure a 5xx is, and for a 500 the traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from engram_voice.errors import (
    AppError,
    CredentialUnavailableError,
    StorageUnavailableError,
    UpstreamThrottledError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    exception_handlers,
)
from engram_voice.logs import REDACTED, configure_logging

SECRETS = [
    "ek_abcdef1234567890",
    "sk-proj-abcdefghijkl",
    "Bearer abcdefghijklmnop.qrs",
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "api-key=supersecretvalue",
]
_RAISED: dict[str, Exception] = {}


def _explode_with_a_secret_in_the_message() -> None:
    raise _RAISED["now"]


@get("/boom", sync_to_thread=False)
def boom() -> None:
    """Fail with whatever the test put in ``_RAISED``."""
    _explode_with_a_secret_in_the_message()


@pytest.fixture(name="capsys_logging")
def fixture_capsys_logging(capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    """Remove the test's production log handler afterwards (it writes to captured stderr)."""
    yield
    logging.getLogger().handlers.clear()


def _call(capsys: pytest.CaptureFixture[str], exc: Exception) -> tuple[int, list[dict[str, Any]]]:
    configure_logging(level="INFO", json=True)  # bound to the stderr capsys captures now
    _RAISED["now"] = exc
    app = Litestar(
        route_handlers=[boom],
        exception_handlers=exception_handlers(),
        debug=False,
        logging_config=None,  # as the service: logs.configure_logging owns logging
    )
    with TestClient(app) as client:
        status = client.get("/boom").status_code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("{")]
    return status, [json.loads(line) for line in lines]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("kind", [KeyError, RuntimeError, ValueError])
def test_an_unexpected_500_logs_type_message_and_traceback_with_secrets_redacted(
    capsys_logging: None,
    capsys: pytest.CaptureFixture[str],
    kind: type[Exception],
    secret: str,
) -> None:
    """http.unhandled_error carries type, message and traceback; a secret in them is redacted."""
    status, logged = _call(capsys, kind(f"lookup of {secret} failed"))
    assert status == 500
    [event] = [e for e in logged if e["event"] == "http.unhandled_error"]
    assert event["error"] == kind.__name__
    assert "lookup of" in event["error_message"]
    assert REDACTED in event["error_message"]
    traceback = event["exception"]
    assert traceback.startswith("Traceback (most recent call last)")
    assert "_explode_with_a_secret_in_the_message" in traceback
    assert kind.__name__ in traceback
    assert REDACTED in traceback
    value = secret.split("=", 1)[-1].split(" ", 1)[-1]
    assert value not in json.dumps(event)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (StorageUnavailableError("disk full", retry_after=2), "http.service_unavailable"),
        (AppError("our own bug, said on purpose"), "http.service_unavailable"),
        (UpstreamUnavailableError("azure down"), "http.upstream_failure"),
        (UpstreamThrottledError("azure 429"), "http.upstream_failure"),
        (UpstreamTimeoutError("azure slow"), "http.upstream_failure"),
        (CredentialUnavailableError("key vault down"), "http.upstream_failure"),
    ],
)
def test_server_errors_are_logged_as_whose_failure_they_are(
    capsys_logging: None, capsys: pytest.CaptureFixture[str], exc: AppError, expected: str
) -> None:
    """Our own 5xx logs http.service_unavailable; a dependency's logs http.upstream_failure."""
    status, logged = _call(capsys, exc)
    assert status == exc.status
    names = [e["event"] for e in logged if e["event"].startswith("http.")]
    assert names == [expected]
    assert logged[-1]["code"] == exc.code
