"""Credentials that do not parse get 401, never 500, through the real app over HTTP.

One service per auth mode runs in this process on loopback (the Azure endpoint is a
closed port: nothing here gets past authentication). The families cover every JSON type
in every JWT header field PyJWT looks at, headers that are not objects, bad base64,
non-UTF-8 segments, huge numbers, deep nesting, and EasyAuth principals of the wrong
shape; hypothesis adds arbitrary JSON headers, claims and principals.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar, get

from engram_voice.app import create_app
from engram_voice.settings import Settings
from tests.support.entra import SigningKey, Tenant, jwks
from tests.support.servers import serve_app

MEMORY_SECRET = "m" * 64
KID = "tenant-key-1"
EXAMPLES = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
HEADER_FIELDS = ["alg", "kid", "crit", "typ", "cty", "b64", "jku", "jwk", "x5c", "x5u", "zip"]
json_objects = st.dictionaries(
    st.sampled_from(HEADER_FIELDS) | st.text(max_size=8), json_values, max_size=6
)


def b64(data: bytes) -> str:
    """Return unpadded base64url, as JWT segments are written."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: object) -> str:
    """Return a JWT segment: raw bytes as they are, anything else as JSON."""
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    return b64(raw)


def unsigned(header: object, payload: object = None) -> str:
    """Return a token with ``header`` and ``payload`` and a signature that proves nothing."""
    claims = {"oid": "x", "exp": 2**40} if payload is None else payload
    return f"{segment(header)}.{segment(claims)}.{b64(b'not-a-signature')}"


ANY_JSON = [None, True, False, 0, 5, -1, 1.5, 10**30, "", "x" * 300, [], ["k"], {}, {"a": 1}]
DEEP = b"[" * 5000 + b"]" * 5000
HUGE_INT = b'{"alg":"RS256","kid":' + b"9" * 5000 + b"}"

MALFORMED_HEADERS: list[object] = [
    *({"alg": "RS256", "kid": kid} for kid in ANY_JSON if not isinstance(kid, str)),
    *({"kid": KID, "alg": alg} for alg in [*ANY_JSON, "none", "HS256", "rs256"]),
    {"kid": KID},
    *({"alg": "RS256", "kid": KID, "crit": crit} for crit in [["foo"], "b64", [], [5], ["kid"]]),
    *({"alg": "RS256", "kid": KID, field: 5} for field in ["typ", "cty", "x5c", "jku", "b64"]),
    {"alg": "RS256", "kid": KID, "b64": False},
    [],
    ["RS256"],
    5,
    "RS256",
    None,
    True,
    b"{",
    b"",
    b"\xff\xfe\xfd",
    b'{"alg":"RS256","kid":"\xe9"}',
    HUGE_INT,
    DEEP,
    b'{"alg":"RS256","kid":"k","alg":5}',
]
RAW_TOKENS = [
    "a",
    "a.b",
    "a.b.c.d",
    "...",
    "!!!.!!!.!!!",
    "e30.e30.",
    "e30.e30.e30.e30",
    f"{b64(b'{}')}===.e30.sig",
    f"{b64(json.dumps({'alg': 'RS256', 'kid': KID}).encode())}.%%%.sig",
    f"{b64(json.dumps({'alg': 'RS256', 'kid': KID}).encode())}.{b64(b'[1]')}.sig",
    f"{b64(json.dumps({'alg': 'RS256', 'kid': KID}).encode())}.{b64(bytes([255, 0]))}.sig",
    f"{b64(json.dumps({'alg': 'RS256', 'kid': KID}).encode())}.{b64(DEEP)}.sig",
]
ODD_CLAIMS = [
    *(
        {"exp": exp, "sid": "vs_1", "sub": "u", "agt": "elena", "aud": "engram-voice/memory"}
        for exp in ["soon", 1.5, None, [], {}, -(10**30)]
    ),
    *(
        {"exp": 2**40, "sid": sid, "sub": "u", "agt": "elena", "aud": "engram-voice/memory"}
        for sid in [5, None, "", [], {"a": 1}, True]
    ),
    *(
        {"exp": 2**40, "sid": "vs_1", "sub": sub, "agt": "elena", "aud": "engram-voice/memory"}
        for sub in [5, None, "", ["u"], 1.5]
    ),
    {"exp": 2**40, "sid": "vs_1", "sub": "u", "agt": "elena", "aud": 5},
    {"exp": 2**40, "sid": "vs_1", "sub": "u", "agt": "elena"},
    {"exp": 2**40, "sid": "vs_1", "sub": "u", "agt": 5, "aud": "engram-voice/memory"},
]
MALFORMED_PRINCIPALS: list[object] = [
    {"claims": 5},
    {"claims": {"typ": "oid", "val": "x"}},
    {"claims": [5]},
    {"claims": [None]},
    {"claims": [{"typ": "oid"}]},
    {"claims": [{"typ": "oid", "val": 5}]},
    {"claims": [{"typ": "oid", "val": None}]},
    {"claims": [{"typ": 5, "val": "x"}]},
    {"claims": [{"typ": "oid", "val": ["x"]}]},
    {"claims": [], "auth_typ": 5},
    {"claims": [{"typ": "oid", "val": "a\x00b"}]},
    {"claims": [{"typ": "oid", "val": "x" * 5000}]},
    [],
    5,
    "principal",
    None,
    b"{",
    b"\xff\xfe",
    DEEP,
]


def _short(value: object) -> str:
    return repr(value)[:40]


def _env(**extra: str) -> dict[str, str]:
    return {
        "APP_ENV": "local",
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "never-sent",
        "MEMORY_TOKEN_KEYS": f"k1:{MEMORY_SECRET}",
        "MEMORY_SQLITE_PATH": str(Path(tempfile.mkdtemp(prefix="engram-401-")) / "q.db"),
        "MEMORY_WORKER": "off",
        "SERVE_WEB": "false",
        "MINT_RATE_LIMIT": "100000/second",
        **extra,
    }


@pytest.fixture(name="signing_key", scope="module")
def fixture_signing_key() -> SigningKey:
    """Return the test tenant's signing key."""
    return SigningKey(KID)


@pytest.fixture(name="entra_url", scope="module")
def fixture_entra_url(signing_key: SigningKey) -> Iterator[str]:
    """Serve the real app in entra mode, trusting a tenant whose JWKS is on loopback."""

    @get("/keys", sync_to_thread=False)
    def keys() -> dict[str, Any]:
        return jwks(signing_key)

    with serve_app(Litestar([keys])) as jwks_base:
        env = _env(**Tenant().env(f"{jwks_base}/keys"))
        with serve_app(create_app(Settings.from_env(env)), ready_path="/healthz") as url:
            yield url


@pytest.fixture(name="easyauth_url", scope="module")
def fixture_easyauth_url() -> Iterator[str]:
    """Serve the real app in easyauth mode."""
    settings_ = Settings.from_env(_env(AUTH_MODE="easyauth"))
    with serve_app(create_app(settings_), ready_path="/healthz") as url:
        yield url


def _mint(url: str, headers: dict[str, bytes]) -> httpx.Response:
    return httpx.post(f"{url}/realtime/sessions", json={"agent": "elena"}, headers=headers)


def _bearer(token: str) -> dict[str, bytes]:
    return {"Authorization": b"Bearer " + token.encode()}


def _enrich(url: str, token: str, *, in_body: bool = False) -> httpx.Response:
    body: dict[str, Any] = {
        "session_id": "vs_1",
        "messages": [{"id": "m1", "role": "user", "text": "hi"}],
    }
    if in_body:
        body["token"] = token
        return httpx.post(
            f"{url}/memory/enrich",
            content=json.dumps(body),
            headers={"Content-Type": "text/plain"},
        )
    return httpx.post(f"{url}/memory/enrich", json=body, headers=_bearer(token))


def _assert_401(response: httpx.Response, reason: str | None = None) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "unauthenticated"
    if reason is not None:
        assert problem["reason"] == reason, problem


@pytest.mark.parametrize("header", MALFORMED_HEADERS, ids=_short)
def test_a_caller_token_with_an_odd_header_gets_401(entra_url: str, header: object) -> None:
    """Every JSON type in kid/alg/crit/typ, non-object or undecodable headers: 401."""
    _assert_401(_mint(entra_url, _bearer(unsigned(header))))


@pytest.mark.parametrize("kid", [k for k in ANY_JSON if k is not None and not isinstance(k, str)])
def test_a_kid_that_is_not_a_string_is_a_malformed_token(entra_url: str, kid: object) -> None:
    """The reported case (``"kid": 5``) and its whole class answer 401 ``malformed_token``."""
    _assert_401(
        _mint(entra_url, _bearer(unsigned({"alg": "RS256", "kid": kid}))), "malformed_token"
    )


@pytest.mark.parametrize("token", RAW_TOKENS)
def test_a_caller_token_that_is_not_three_segments_of_base64_gets_401(
    entra_url: str, token: str
) -> None:
    """Wrong segment counts, bad base64 and non-object payloads answer 401."""
    _assert_401(_mint(entra_url, _bearer(token)))


def test_non_ascii_bytes_in_the_caller_token_get_401(entra_url: str) -> None:
    """A token with bytes outside ASCII (read as Latin-1 by the server) answers 401."""
    headers = {"Authorization": b"Bearer \xe9\xff." + b64(b"{}").encode() + b".sig"}
    _assert_401(_mint(entra_url, headers), "malformed_token")


@given(header=json_objects, payload=json_values)
@EXAMPLES
def test_arbitrary_json_in_a_caller_token_never_gets_a_5xx(
    entra_url: str, header: dict[str, Any], payload: object
) -> None:
    """Whatever JSON the header and payload hold, an unsigned token answers 401."""
    header = {"alg": "RS256", "kid": KID, **header}
    _assert_401(_mint(entra_url, _bearer(unsigned(header, payload))))


@given(raw=st.binary(min_size=1, max_size=64), parts=st.integers(min_value=1, max_value=4))
@EXAMPLES
def test_arbitrary_bytes_as_token_segments_get_401(entra_url: str, raw: bytes, parts: int) -> None:
    """Random bytes in any number of base64 segments answer 401."""
    _assert_401(_mint(entra_url, _bearer(".".join([b64(raw)] * parts))))


@pytest.mark.parametrize("header", MALFORMED_HEADERS, ids=_short)
@pytest.mark.parametrize("in_body", [False, True], ids=["bearer", "body"])
def test_a_memory_token_with_an_odd_header_gets_401(
    entra_url: str, header: object, in_body: bool
) -> None:
    """The memory token's verify path refuses the same family with 401."""
    token = unsigned(header)
    response = _enrich(entra_url, token, in_body=in_body)
    if in_body and len(token) > 4096:  # the body field's declared limit comes first
        assert response.status_code == 413
    else:
        _assert_401(response)


@pytest.mark.parametrize("claims", ODD_CLAIMS, ids=_short)
def test_a_correctly_signed_memory_token_with_odd_claims_gets_401(
    entra_url: str, claims: dict[str, Any]
) -> None:
    """Claims of the wrong type, even under a valid signature, answer 401."""
    token = jwt.encode(claims, MEMORY_SECRET, algorithm="HS256", headers={"kid": "k1"})
    _assert_401(_enrich(entra_url, token))


@given(header=json_objects, payload=json_objects)
@EXAMPLES
def test_arbitrary_json_in_a_signed_memory_token_never_gets_a_5xx(
    entra_url: str, header: dict[str, Any], payload: dict[str, Any]
) -> None:
    """A signed memory token with arbitrary header fields and claims answers 401."""
    raw_header = {**header, "alg": "HS256", "kid": "k1"}
    signing_input = f"{segment(raw_header)}.{segment(payload)}"
    _assert_401(_enrich(entra_url, _sign(signing_input)))


def _sign(signing_input: str) -> str:
    """Return ``signing_input`` with a valid HS256 signature under the memory key."""
    mac = hmac.new(MEMORY_SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def _principal_headers(document: object) -> dict[str, bytes]:
    raw = document if isinstance(document, bytes) else json.dumps(document).encode()
    return {"X-MS-CLIENT-PRINCIPAL": base64.b64encode(raw)}


@pytest.mark.parametrize("document", MALFORMED_PRINCIPALS, ids=_short)
def test_an_easyauth_principal_of_the_wrong_shape_gets_401(
    easyauth_url: str, document: object
) -> None:
    """Claims that are not a list, values that are not strings, non-JSON blobs: 401."""
    _assert_401(_mint(easyauth_url, _principal_headers(document)))


@pytest.mark.parametrize(
    "blob", [b"%%%", b"\xff\xfe", b"=" * 10, b"a", base64.b64encode(b"{}")[:-1] + b"\xe9"]
)
def test_an_easyauth_principal_that_is_not_base64_gets_401(easyauth_url: str, blob: bytes) -> None:
    """A principal header that is not base64 answers 401."""
    _assert_401(_mint(easyauth_url, {"X-MS-CLIENT-PRINCIPAL": blob}))


@given(document=json_values)
@EXAMPLES
def test_an_arbitrary_easyauth_principal_never_gets_a_5xx(
    easyauth_url: str, document: object
) -> None:
    """Whatever JSON the principal blob holds, the answer is 401 (no user id in it)."""
    _assert_401(_mint(easyauth_url, _principal_headers(document)))
