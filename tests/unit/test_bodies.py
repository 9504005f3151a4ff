"""The one body decoder refuses every malformed body with 400/413 naming the field."""

from __future__ import annotations

import json

import pytest

from engram_voice.bodies import BodyDecoder
from engram_voice.errors import PayloadTooLargeError, ValidationError
from engram_voice.memory.routes import ENRICH_BODY
from engram_voice.memory.schemas import EnrichRequest
from engram_voice.realtime.routes import MINT_BODY

DECODERS = {"mint": MINT_BODY, "enrich": ENRICH_BODY}
FIRST_FIELD = {"mint": b'"agent"', "enrich": b'"session_id"'}
VALID = {
    "mint": b'{"agent":"elena"}',
    "enrich": b'{"session_id":"vs_1","messages":[{"id":"m1","role":"user","text":"hi"}]}',
}

INVALID_UTF8 = {
    "latin1-e-acute": b"\xe9",
    "lone-continuation": b"\x80",
    "truncated-2-byte": b"\xc3",
    "overlong-slash": b"\xc0\xaf",
    "encoded-surrogate": b"\xed\xa0\x80",
    "beyond-u10ffff": b"\xf4\x90\x80\x80",
    "ff-byte": b"\xff",
}


def _mint(agent: bytes) -> bytes:
    return b'{"agent":"' + agent + b'"}'


def _enrich(text: bytes) -> bytes:
    return b'{"session_id":"vs_1","messages":[{"id":"m1","role":"user","text":"' + text + b'"}]}'


def _field(raised: pytest.ExceptionInfo[ValidationError]) -> str:
    return str(raised.value.extra["errors"][0]["field"])


@pytest.mark.parametrize("bad", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
@pytest.mark.parametrize(
    "wrap",
    [
        lambda b: _mint(b"el" + b + b"na"),
        lambda b: _enrich(b"caf" + b),
        lambda b: b'{"agent":"elena","' + b + b'":1}',  # in a key
        lambda b: b'{"agent":"elena"}' + b,  # after the document
        lambda b: b + _mint(b"elena"),  # before it
    ],
    ids=["mint-value", "enrich-text", "key", "trailing", "leading"],
)
@pytest.mark.parametrize("route", DECODERS)
def test_bodies_that_are_not_utf8_are_400_naming_body(route, wrap, bad):
    """Invalid UTF-8 anywhere in the body is a 400 naming ``body``, for both routes."""
    with pytest.raises(ValidationError) as raised:
        DECODERS[route].decode(wrap(bad))
    assert raised.value.code == "validation_failed"
    assert _field(raised) == "body"
    assert "UTF-8" in raised.value.extra["errors"][0]["message"]


MALFORMED = {
    "nan": b'{"agent":NaN}',
    "infinity": b'{"agent":Infinity}',
    "minus-infinity": b'{"agent":-Infinity}',
    "truncated": b'{"agent":"elena"',
    "truncated-string": b'{"agent":"ele',
    "trailing-garbage": b"VALID x",
    "two-documents": b"VALIDVALID",
    "single-quotes": b"{'agent':'elena'}",
    "trailing-comma": b'{"agent":"elena",}',
    "empty": b"",
    "whitespace": b"   ",
    "comment": b'{"agent":"elena"/* x */}',
    "raw-control-char": b'{"agent":"el\x00ena"}',
    "lone-high-surrogate-escape": b'{"agent":"\\ud800"}',
    "lone-low-surrogate-escape": b'{"agent":"\\udc00"}',
    "high-surrogate-then-letter": b'{"agent":"\\ud800\\u0041"}',
    "bad-escape": b'{"agent":"\\x41"}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("route", DECODERS)
def test_malformed_json_is_400_naming_body(route, body):
    """NaN, Infinity, truncation, trailing bytes and lone surrogates are 400 naming ``body``."""
    with pytest.raises(ValidationError) as raised:
        DECODERS[route].decode(
            body.replace(b'"agent"', FIRST_FIELD[route]).replace(b"VALID", VALID[route])
        )
    assert raised.value.code == "validation_failed"
    assert _field(raised) == "body"


def _deep(depth: int, open_: bytes, close: bytes) -> bytes:
    return open_ * depth + b"1" + close * depth


NESTINGS = {
    "arrays": (b"[", b"]"),
    "objects": (b'{"a":', b"}"),
    "mixed": (b'[{"a":', b"}]"),
}


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
@pytest.mark.parametrize("shape", NESTINGS.values(), ids=NESTINGS.keys())
@pytest.mark.parametrize(
    "place",
    [
        lambda v: v,
        lambda v: b'{"agent":' + v + b"}",
        lambda v: b'{"agent":"elena","conversation_id":' + v + b"}",
        lambda v: b'{"session_id":"vs_1","messages":' + v + b"}",
        lambda v: b'{"session_id":"vs_1","messages":[{"id":"m","role":"user","text":' + v + b"}]}",
    ],
    ids=["top", "agent", "conversation_id", "messages", "text"],
)
@pytest.mark.parametrize("route", DECODERS)
def test_deep_nesting_is_a_400_never_a_recursion_error(route, place, shape, depth):
    """JSON nested thousands of levels deep, anywhere in the body, is a 400 with a field."""
    body = place(_deep(depth, *shape))
    if len(body) > DECODERS[route].max_bytes:
        with pytest.raises(PayloadTooLargeError):
            DECODERS[route].decode(body)
        return
    with pytest.raises(ValidationError) as raised:
        DECODERS[route].decode(body)
    assert raised.value.code == "validation_failed"
    assert raised.value.extra["errors"][0]["field"]


def test_a_schema_that_allows_any_value_still_refuses_deep_nesting():
    """Where the type would accept any nesting, the interpreter's limit becomes a 400 ``body``."""
    import msgspec  # noqa: PLC0415 - a throwaway type for this test only

    class Loose(msgspec.Struct):
        value: object

    decoder = BodyDecoder(Loose, max_bytes=1 << 20)
    with pytest.raises(ValidationError) as raised:
        decoder.decode(b'{"value":' + _deep(100_000, b"[", b"]") + b"}")
    assert _field(raised) == "body"
    assert "nested" in raised.value.extra["errors"][0]["message"]


@pytest.mark.parametrize(
    "text",
    ["a\u0000b", "\u0000", "ab\u0000", "\u0000ab", "x" * 500 + "\u0000" + "y" * 500],
    ids=["middle", "alone", "end", "start", "long"],
)
@pytest.mark.parametrize("index", [0, 2])
def test_text_with_nul_is_400_naming_the_turn(text, index):
    """U+0000 in a turn's text (PostgreSQL cannot store it) is 400 naming ``messages[i].text``."""
    messages = [{"id": f"m{i}", "role": "user", "text": "fine"} for i in range(3)]
    messages[index]["text"] = text
    body = json.dumps({"session_id": "vs_1", "messages": messages}).encode()
    with pytest.raises(ValidationError) as raised:
        ENRICH_BODY.decode(body)
    error = raised.value.extra["errors"][0]
    assert error["field"] == f"messages[{index}].text"
    assert "U+0000" in error["message"]


@pytest.mark.parametrize(
    "text", ["tab\there", "line\nbreak", "\u0001control", "emoji \U0001f600", "\ufffe", "é"]
)
def test_other_unicode_text_is_kept(text):
    """Control characters other than NUL, astral characters and non-characters are accepted."""
    body = json.dumps(
        {"session_id": "vs_1", "messages": [{"id": "m", "role": "user", "text": text}]}
    ).encode()
    request = ENRICH_BODY.decode(body)
    assert isinstance(request, EnrichRequest)
    assert request.messages[0].text == text


@pytest.mark.parametrize("route", DECODERS)
def test_the_valid_bodies_used_above_decode(route):
    """The valid base bodies of these tests decode, so each refusal is the defect's own."""
    assert DECODERS[route].decode(VALID[route])


@pytest.mark.parametrize("route", DECODERS)
def test_a_body_over_the_byte_limit_is_413_naming_body(route):
    """A body over the route's byte limit is 413 before any decoding."""
    decoder = DECODERS[route]
    with pytest.raises(PayloadTooLargeError) as raised:
        decoder.decode(b" " * (decoder.max_bytes + 1))
    assert raised.value.extra["errors"][0]["field"] == "body"


def test_an_over_long_agent_id_is_a_400_but_an_over_long_text_is_a_413():
    """Mint treats an over-long id as malformed (400); enrich treats size limits as 413."""
    with pytest.raises(ValidationError) as mint:
        MINT_BODY.decode(_mint(b"e" * 40))
    assert not isinstance(mint.value, PayloadTooLargeError)
    assert _field(mint) == "agent"
    with pytest.raises(PayloadTooLargeError):
        ENRICH_BODY.decode(_enrich(b"x" * 10_001))
