"""The HTTP edge over the real app: both routes refuse bad bodies alike, credentials agree."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import TestClient

from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner

PROBLEM_JSON = "application/problem+json"
SIGNER = MemoryTokenSigner([("k1", Secret("a" * 64))])  # the app_env fixture's key
FORGER = MemoryTokenSigner([("k1", Secret("f" * 64))])
ROUTES = ["/realtime/sessions", "/memory/enrich"]
CONTENT_TYPES = ["application/json", "text/plain;charset=UTF-8"]


def _token(session: str, signer: MemoryTokenSigner = SIGNER) -> str:
    return signer.issue(session_id=session, user_id="local-user", agent="elena").token


def _enrich_body(session: str = "vs_a", text: str = "hello", **extra: object) -> dict[str, Any]:
    return {
        "session_id": session,
        "messages": [{"id": "m1", "role": "user", "text": text}],
        **extra,
    }


def _assert_validation_failed(answer: Any, field: str) -> None:
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    problem = answer.json()
    assert problem["code"] == "validation_failed"
    assert [e["field"] for e in problem["errors"]] == [field]


def _raw(path: str, value: bytes) -> bytes:
    """Return a body for ``path`` whose one string value is ``value`` (raw, unescaped bytes)."""
    if path == "/realtime/sessions":
        return b'{"agent":"' + value + b'"}'
    return b'{"session_id":"vs_a","messages":[{"id":"m1","role":"user","text":"' + value + b'"}]}'


@pytest.mark.parametrize(
    "value",
    [b"el\xe9na", b"caf\xe9", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"ok\x80ok"],
    ids=["latin1-elena", "latin1-cafe", "bom-bytes", "truncated", "surrogate", "continuation"],
)
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("path", ROUTES)
def test_a_body_that_is_not_utf8_is_400_naming_body(
    client: TestClient[Any], path: str, content_type: str, value: bytes
) -> None:
    """Invalid UTF-8 on either route and content type is 400 validation_failed naming body."""
    headers = {"content-type": content_type, "authorization": f"Bearer {_token('vs_a')}"}
    answer = client.post(path, content=_raw(path, value), headers=headers)
    _assert_validation_failed(answer, "body")


MALFORMED = {
    "nan": b'{"agent":NaN}',
    "infinity": b'{"agent":Infinity}',
    "truncated": b'{"agent":"elena"',
    "trailing": b'{"agent":"elena"}]',
    "not-json": b"agent=elena",
    "empty": b"",
    "deep-arrays-1000": b'{"agent":' + b"[" * 1000 + b"]" * 1000 + b"}",
    "deep-objects-1000": b'{"agent":' + b'{"a":' * 1000 + b"1" + b"}" * 1000 + b"}",
    "deep-top-level": b"[" * 1000 + b"]" * 1000,
    "lone-surrogate": b'{"agent":"\\ud800"}',
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
@pytest.mark.parametrize("path", ROUTES)
def test_malformed_bodies_are_validation_failed_with_errors_on_both_routes(
    client: TestClient[Any], path: str, content_type: str, body: bytes
) -> None:
    """NaN, truncation, trailing bytes and 1,000-deep nesting are 400 with ``errors``, not 500."""
    if path == "/memory/enrich":
        body = body.replace(b'"agent"', b'"session_id"')
    headers = {"content-type": content_type, "authorization": f"Bearer {_token('vs_a')}"}
    answer = client.post(path, content=body, headers=headers)
    assert answer.status_code == 400, answer.text
    problem = answer.json()
    assert problem["code"] == "validation_failed"
    assert problem["errors"], problem
    assert all(e["field"] for e in problem["errors"])


@pytest.mark.parametrize("path", ROUTES)
def test_an_oversized_body_is_413_on_both_routes(client: TestClient[Any], path: str) -> None:
    """A body over the route's byte limit is 413 payload_too_large."""
    answer = client.post(path, content=b'{"agent":"' + b"x" * 300_000 + b'"}')
    assert answer.status_code == 413
    assert answer.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("text", ["a\u0000b", "\u0000", "ends\u0000"])
@pytest.mark.parametrize("index", [0, 1])
def test_enrich_refuses_text_with_nul_naming_the_turn(
    client: TestClient[Any], text: str, index: int
) -> None:
    """A turn text with U+0000 is refused with 400 naming ``messages[i].text``; nothing stored."""
    messages = [{"id": f"m{i}", "role": "user", "text": "fine"} for i in range(2)]
    messages[index]["text"] = text
    answer = client.post(
        "/memory/enrich",
        json={"session_id": "vs_a", "messages": messages},
        headers={"authorization": f"Bearer {_token('vs_a')}"},
    )
    _assert_validation_failed(answer, f"messages[{index}].text")
    again = client.post(
        "/memory/enrich",
        json=_enrich_body(),
        headers={"authorization": f"Bearer {_token('vs_a')}"},
    )
    assert again.json() == {"accepted": 1, "duplicates": 0}


@pytest.mark.parametrize(
    "body_token",
    [
        _token("vs_b"),  # a real token for another session
        _token("vs_a", FORGER),  # a forged token for the same session
        "not-a-token",
        _token("vs_a") + "x",
    ],
    ids=["other-session", "forged-same-session", "garbage", "tampered"],
)
@pytest.mark.parametrize("content_type", CONTENT_TYPES)
def test_a_body_token_that_contradicts_the_header_token_is_401_naming_token(
    client: TestClient[Any], body_token: str, content_type: str
) -> None:
    """Header token for session A with another body token is refused 401 naming ``token``."""
    answer = client.post(
        "/memory/enrich",
        content=json.dumps(_enrich_body("vs_a", token=body_token)),
        headers={"authorization": f"Bearer {_token('vs_a')}", "content-type": content_type},
    )
    assert answer.status_code == 401, answer.text
    problem = answer.json()
    assert problem["code"] == "unauthenticated"
    assert [e["field"] for e in problem["errors"]] == ["token"]
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_the_same_token_in_header_and_body_is_accepted(client: TestClient[Any]) -> None:
    """Sending the one memory token both ways is not a contradiction: 202."""
    token = _token("vs_a")
    answer = client.post(
        "/memory/enrich",
        json=_enrich_body("vs_a", token=token),
        headers={"authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 202, answer.text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("put", "/healthz", {"GET"}),
        ("delete", "/realtime/sessions", {"POST"}),
        ("get", "/memory/enrich", {"POST"}),
        ("post", "/status", {"GET"}),
        ("patch", "/metrics", {"GET"}),
        ("post", "/", {"GET"}),  # the demo page
        ("put", "/schema/openapi.json", {"GET"}),
    ],
)
def test_a_405_names_the_allowed_methods(
    client: TestClient[Any], method: str, path: str, allowed: set[str]
) -> None:
    """Every 405 carries an ``Allow`` header listing the path's methods (RFC 9110)."""
    answer = client.request(method.upper(), path)
    assert answer.status_code == 405
    assert answer.json()["code"] == "method_not_allowed"
    listed = {m.strip() for m in answer.headers["allow"].split(",")}
    assert allowed <= listed
    assert method.upper() not in listed
