import json

import pytest

from engram_voice.errors import PayloadTooLargeError, ValidationError
from engram_voice.memory.delivery import split_text
from engram_voice.memory.routes import decode_enrich
from engram_voice.memory.schemas import MAX_BODY_BYTES, MAX_MESSAGES, MAX_TEXT_CHARS


def _body(**overrides):
    body = {
        "session_id": "vs_1",
        "messages": [{"id": "item_1", "role": "user", "text": "hello"}],
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_valid_body_decodes_with_optional_time_and_token():
    """A well-formed body decodes, including an RFC 3339 time and a body token."""
    request = decode_enrich(
        _body(
            messages=[
                {"id": "a.1:x-y_z", "role": "assistant", "text": "hi", "at": "2025-01-01T00:00:00Z"}
            ],
            token="t",
        )
    )
    assert request.messages[0].at is not None
    assert request.token == "t"


def test_too_many_messages_is_413_naming_the_field():
    """More turns than the declared limit answers 413 and names ``messages``."""
    messages = [{"id": f"m{i}", "role": "user", "text": "x"} for i in range(MAX_MESSAGES + 1)]
    with pytest.raises(PayloadTooLargeError) as raised:
        decode_enrich(_body(messages=messages))
    assert raised.value.extra["errors"][0]["field"] == "messages"


def test_too_long_text_is_413_naming_the_turn():
    """A turn text over the limit answers 413 and names the exact turn."""
    messages = [{"id": "m", "role": "user", "text": "x" * (MAX_TEXT_CHARS + 1)}]
    with pytest.raises(PayloadTooLargeError) as raised:
        decode_enrich(_body(messages=messages))
    assert raised.value.extra["errors"][0]["field"] == "messages[0].text"


def test_oversized_body_is_413():
    """A body over the byte limit answers 413 before decoding."""
    with pytest.raises(PayloadTooLargeError):
        decode_enrich(b" " * (MAX_BODY_BYTES + 1))


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_body(messages=[{"id": "bad id!", "role": "user", "text": "x"}]), "messages[0].id"),
        (_body(messages=[{"id": "m", "role": "system", "text": "x"}]), "messages[0].role"),
        (_body(messages=[{"id": "m", "role": "user", "text": ""}]), "messages[0].text"),
        (_body(messages=[]), "messages"),
        (_body(extra=1), "extra"),
        (
            json.dumps({"messages": [{"id": "m", "role": "user", "text": "x"}]}).encode(),
            "session_id",
        ),
        (b"{not json", "body"),
    ],
)
def test_invalid_bodies_are_400_naming_the_field(body, field):
    """Every invalid shape answers 400 naming the offending field."""
    with pytest.raises(ValidationError) as raised:
        decode_enrich(body)
    assert raised.value.extra["errors"][0]["field"] == field


def test_split_text_keeps_every_character_within_the_limit():
    """Long text splits at spaces into parts within the limit that rejoin to the original."""
    text = " ".join(f"word{i}" for i in range(2000))
    parts = split_text(text, 100)
    assert all(len(p) <= 100 for p in parts)
    assert " ".join(parts) == text
    assert split_text("x" * 250, 100) == ["x" * 100, "x" * 100, "x" * 50]
    assert split_text("short", 100) == ["short"]
