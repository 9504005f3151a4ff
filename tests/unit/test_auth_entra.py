"""Entra ID access-token validation against a JWKS and tokens the test generates."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from engram_voice.auth import AuthSettings, Caller, EntraAuthenticator
from engram_voice.envreader import EnvReader
from engram_voice.errors import AuthenticationError, ForbiddenError
from tests.support.clock import FakeClock
from tests.support.entra import JwksEndpoint, SigningKey, Tenant

MakeAuthenticator = Callable[..., EntraAuthenticator]


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return the clock the JWKS cache runs on."""
    return FakeClock()


@pytest.fixture(name="make_authenticator")
async def fixture_make_authenticator(
    tenant: Tenant, endpoint: JwksEndpoint, clock: FakeClock
) -> AsyncIterator[MakeAuthenticator]:
    """Return a factory of entra authenticators for the tenant (extra env overrides)."""
    http = endpoint.client()

    def make(**env: str) -> EntraAuthenticator:
        reader = EnvReader(tenant.env(endpoint.url, **env))
        settings = AuthSettings.from_env(reader, bind_host="10.1.2.3")
        reader.raise_if_invalid()
        return EntraAuthenticator(settings.entra, http, clock=clock)

    yield make
    await http.aclose()


@pytest.fixture(name="authenticator")
def fixture_authenticator(make_authenticator: MakeAuthenticator) -> EntraAuthenticator:
    """Return an authenticator with the default settings."""
    return make_authenticator()


def bearer(token: str) -> dict[str, str]:
    """Return request headers carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def rejection(authenticator: EntraAuthenticator, token: str) -> AuthenticationError:
    """Return the 401 the authenticator raises for ``token`` (fail if it accepts it)."""
    with pytest.raises(AuthenticationError) as info:
        await authenticator.authenticate(bearer(token))
    assert token not in info.value.detail
    return info.value


async def test_valid_token_gives_the_caller_named_by_oid(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A valid token authenticates as its ``oid`` with the ``name`` claim for display."""
    caller = await authenticator.authenticate(bearer(tenant.token(key)))
    assert caller == Caller(
        user_id="00000000-0000-0000-0000-0000000000a1",
        display_name="Ada Lovelace",
        auth_mode="entra",
    )


async def test_display_name_falls_back_to_preferred_username(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """Without a ``name`` claim the display name is the ``preferred_username``."""
    caller = await authenticator.authenticate(bearer(tenant.token(key, name=None)))
    assert caller.display_name == "ada@example.com"


async def test_scheme_name_is_case_insensitive(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """``authorization: bearer <token>`` (lower case) is accepted like ``Bearer``."""
    caller = await authenticator.authenticate({"authorization": f"bearer {tenant.token(key)}"})
    assert caller.auth_mode == "entra"


async def test_v1_issuer_and_client_id_audience_are_accepted(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A v1.0 token (sts.windows.net issuer) for the app's client id is valid by default."""
    token = tenant.token(key, iss=tenant.v1_issuer, aud=tenant.client_id, ver="1.0")
    caller = await authenticator.authenticate(bearer(token))
    assert caller.user_id == "00000000-0000-0000-0000-0000000000a1"


async def test_expired_token_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token past ``exp`` (beyond the leeway) answers 401 saying it expired."""
    now = int(time.time())
    error = await rejection(authenticator, tenant.token(key, iat=now - 7200, exp=now - 3600))
    assert error.status == 401
    assert "expired" in error.detail
    assert error.extra == {"reason": "expired"}


async def test_expiry_within_leeway_is_tolerated(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token that expired a few seconds ago still passes within the default 60 s leeway."""
    caller = await authenticator.authenticate(bearer(tenant.token(key, exp=int(time.time()) - 5)))
    assert caller.user_id


async def test_token_not_yet_valid_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token whose ``nbf`` is in the future answers 401 saying it is not valid yet."""
    now = int(time.time())
    error = await rejection(authenticator, tenant.token(key, nbf=now + 3600, iat=now))
    assert error.extra == {"reason": "not_yet_valid"}


async def test_wrong_audience_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token issued for another API answers 401 naming the audience problem."""
    error = await rejection(authenticator, tenant.token(key, aud="api://someone-else"))
    assert "audience" in error.detail


async def test_wrong_issuer_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token from another tenant's issuer answers 401 naming the issuer problem."""
    other = Tenant()
    error = await rejection(authenticator, tenant.token(key, iss=other.issuer))
    assert "issuer" in error.detail


async def test_configured_issuer_replaces_the_defaults(
    make_authenticator: MakeAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """With ``ENTRA_ISSUER`` set, only that issuer is accepted (v1 no longer is)."""
    authenticator = make_authenticator(ENTRA_ISSUER=tenant.issuer)
    assert await authenticator.authenticate(bearer(tenant.token(key)))
    error = await rejection(authenticator, tenant.token(key, iss=tenant.v1_issuer))
    assert error.extra == {"reason": "wrong_issuer"}


async def test_signature_by_another_key_with_the_same_kid_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token signed by a forger's key that claims the tenant's kid fails the signature."""
    forger = SigningKey(key.kid)
    error = await rejection(authenticator, tenant.token(forger))
    assert error.extra == {"reason": "bad_signature"}


async def test_tampered_payload_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """Changing the payload of a genuine token (another oid) breaks its signature."""
    head, _, signature = tenant.token(key).split(".")
    forged_payload = jwt.utils.base64url_encode(
        json.dumps(tenant.claims(oid="victim")).encode()
    ).decode()
    error = await rejection(authenticator, f"{head}.{forged_payload}.{signature}")
    assert error.extra == {"reason": "bad_signature"}


async def test_alg_none_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, endpoint: JwksEndpoint, key: SigningKey
) -> None:
    """An unsigned token (``alg: none``) is refused before any key lookup."""
    token = jwt.encode(tenant.claims(), key="", algorithm="none", headers={"kid": key.kid})
    error = await rejection(authenticator, token)
    assert error.extra == {"reason": "bad_algorithm"}
    assert endpoint.requests == 0


async def test_hs256_signed_with_the_public_key_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """The key-confusion attack (HS256 keyed with the published public key) is refused."""
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = b".".join(
        jwt.utils.base64url_encode(json.dumps(part).encode())
        for part in ({"alg": "HS256", "typ": "JWT", "kid": key.kid}, tenant.claims())
    )
    mac = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + jwt.utils.base64url_encode(mac)).decode()
    error = await rejection(authenticator, token)
    assert error.extra == {"reason": "bad_algorithm"}


async def test_missing_authorization_header_is_rejected(
    authenticator: EntraAuthenticator,
) -> None:
    """A request without Authorization answers 401 asking the caller to sign in."""
    with pytest.raises(AuthenticationError) as info:
        await authenticator.authenticate({"Content-Type": "application/json"})
    assert info.value.extra == {"reason": "missing_token"}
    assert "Bearer" in info.value.detail


@pytest.mark.parametrize(
    "value",
    ["Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Bearer a b", "Token abc.def.ghi"],
)
async def test_malformed_authorization_header_is_rejected(
    authenticator: EntraAuthenticator, value: str
) -> None:
    """An Authorization header that is not ``Bearer <token>`` answers 401 saying so."""
    with pytest.raises(AuthenticationError) as info:
        await authenticator.authenticate({"Authorization": value})
    assert info.value.extra == {"reason": "malformed_header"}


@pytest.mark.parametrize("token", ["not-a-jwt", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30"])
async def test_garbage_token_is_rejected_as_malformed(
    authenticator: EntraAuthenticator, endpoint: JwksEndpoint, token: str
) -> None:
    """A bearer value that is not a JWT answers 401 without fetching any key."""
    error = await rejection(authenticator, token)
    assert error.extra["reason"] in {"malformed_token", "missing_kid"}
    assert endpoint.requests == 0


async def test_token_without_kid_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token whose header names no signing key answers 401."""
    token = jwt.encode(tenant.claims(), key.private_key, algorithm="RS256")
    error = await rejection(authenticator, token)
    assert error.extra == {"reason": "missing_kid"}


async def test_token_without_oid_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A token lacking the ``oid`` claim answers 401 naming the claim."""
    error = await rejection(authenticator, tenant.token(key, oid=None))
    assert "'oid'" in error.detail


async def test_app_only_token_is_forbidden(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """A client-credentials token (``roles`` but no ``scp``) answers 403: no user to act for."""
    token = tenant.token(key, scp=None, roles=["Voice.Mint"], name=None, preferred_username=None)
    with pytest.raises(ForbiddenError) as info:
        await authenticator.authenticate(bearer(token))
    assert info.value.status == 403
    assert "scp" in info.value.detail


async def test_required_scope_is_enforced(
    make_authenticator: MakeAuthenticator, tenant: Tenant, key: SigningKey
) -> None:
    """With ``ENTRA_REQUIRED_SCOPES`` a token needs one of them; otherwise 403."""
    authenticator = make_authenticator(ENTRA_REQUIRED_SCOPES="voice.session,voice.admin")
    assert await authenticator.authenticate(bearer(tenant.token(key, scp="openid voice.session")))
    with pytest.raises(ForbiddenError) as info:
        await authenticator.authenticate(bearer(tenant.token(key, scp="User.Read")))
    assert "voice.session" in info.value.detail


@pytest.mark.parametrize("oid", ["a\x00b", "a\nb", "\x7f", "a\ud800", "x" * 513, 5, ["a"], ""])
async def test_an_oid_that_is_not_a_usable_user_id_is_rejected(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey, oid: object
) -> None:
    """A signed token whose ``oid`` breaks the user id rule answers 401, never a user."""
    error = await rejection(authenticator, tenant.token(key, oid=oid))
    assert error.extra == {"reason": "missing_claim"}
