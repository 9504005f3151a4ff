"""The Entra signing-key cache: one shared fetch, bounded re-fetches, stale keys, 503s."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engram_voice.auth import AuthSettings, EntraAuthenticator
from engram_voice.envreader import EnvReader
from engram_voice.errors import AuthenticationError, CredentialUnavailableError
from tests.support.clock import FakeClock
from tests.support.entra import JwksEndpoint, SigningKey, Tenant


@pytest.fixture(name="next_key", scope="module")
def fixture_next_key() -> SigningKey:
    """Return the key the tenant rotates to."""
    return SigningKey("key-2025")


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return the clock the JWKS cache runs on."""
    return FakeClock()


@pytest.fixture(name="authenticator")
async def fixture_authenticator(
    tenant: Tenant, endpoint: JwksEndpoint, clock: FakeClock
) -> AsyncIterator[EntraAuthenticator]:
    """Return an entra authenticator with default cache settings on the fake clock."""
    reader = EnvReader(tenant.env(endpoint.url))
    settings = AuthSettings.from_env(reader, bind_host="10.1.2.3")
    reader.raise_if_invalid()
    async with endpoint.client() as http:
        yield EntraAuthenticator(settings.entra, http, clock=clock)


def bearer(token: str) -> dict[str, str]:
    """Return request headers carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def rejection(authenticator: EntraAuthenticator, token: str) -> AuthenticationError:
    """Return the 401 the authenticator raises for ``token`` (fail if it accepts it)."""
    with pytest.raises(AuthenticationError) as info:
        await authenticator.authenticate(bearer(token))
    assert token not in info.value.detail
    return info.value


async def test_keys_are_fetched_once_and_cached(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey, endpoint: JwksEndpoint
) -> None:
    """Many validations within the cache lifetime fetch the JWKS once."""
    for _ in range(5):
        await authenticator.authenticate(bearer(tenant.token(key)))
    assert endpoint.requests == 1


async def test_concurrent_cold_start_shares_one_fetch(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey, endpoint: JwksEndpoint
) -> None:
    """Twenty callers arriving while the first fetch is in flight all wait for that one."""
    endpoint.gate.clear()
    token = tenant.token(key)
    tasks = [asyncio.create_task(authenticator.authenticate(bearer(token))) for _ in range(20)]
    await asyncio.wait_for(endpoint.entered.wait(), timeout=5)
    endpoint.gate.set()
    callers = await asyncio.wait_for(asyncio.gather(*tasks), timeout=10)
    assert {c.user_id for c in callers} == {"00000000-0000-0000-0000-0000000000a1"}
    assert endpoint.requests == 1


async def test_unknown_kid_triggers_one_refetch_that_picks_up_a_rotation(
    *,
    authenticator: EntraAuthenticator,
    tenant: Tenant,
    key: SigningKey,
    next_key: SigningKey,
    endpoint: JwksEndpoint,
    clock: FakeClock,
) -> None:
    """After the tenant rotates keys, a token with the new kid re-fetches once and passes."""
    await authenticator.authenticate(bearer(tenant.token(key)))
    clock.advance(61)
    endpoint.publish(key, next_key)
    caller = await authenticator.authenticate(bearer(tenant.token(next_key)))
    assert caller.user_id
    assert endpoint.requests == 2


async def test_flood_of_unknown_kids_refetches_at_most_once_per_interval(
    authenticator: EntraAuthenticator,
    tenant: Tenant,
    key: SigningKey,
    endpoint: JwksEndpoint,
    clock: FakeClock,
) -> None:
    """Forged kids get 401 and cause one re-fetch per ``ENTRA_JWKS_MIN_REFETCH_SECONDS``."""
    await authenticator.authenticate(bearer(tenant.token(key)))
    clock.advance(61)
    for n in range(50):
        error = await rejection(authenticator, tenant.token(key, kid=f"forged-{n}"))
        assert "signing key" in error.detail
    assert endpoint.requests == 2
    clock.advance(61)
    await rejection(authenticator, tenant.token(key, kid="forged-late"))
    assert endpoint.requests == 3


async def test_unknown_kid_right_after_a_fetch_does_not_refetch(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey, endpoint: JwksEndpoint
) -> None:
    """Keys fetched moments ago are not fetched again for an unknown kid."""
    await authenticator.authenticate(bearer(tenant.token(key)))
    await rejection(authenticator, tenant.token(key, kid="forged"))
    assert endpoint.requests == 1


async def test_jwks_unreachable_is_503_not_401(
    authenticator: EntraAuthenticator, tenant: Tenant, key: SigningKey, endpoint: JwksEndpoint
) -> None:
    """When the JWKS cannot be fetched the answer is 503 with Retry-After, not a 401."""
    endpoint.down = True
    with pytest.raises(CredentialUnavailableError) as info:
        await authenticator.authenticate(bearer(tenant.token(key)))
    assert info.value.status == 503
    assert info.value.retry_after
    assert not isinstance(info.value, AuthenticationError)


@pytest.mark.parametrize(
    ("status", "document"),
    [(500, {"error": "boom"}), (200, b"<html>not json</html>"), (200, {"keys": []})],
)
async def test_unusable_jwks_answer_is_503(
    *,
    authenticator: EntraAuthenticator,
    tenant: Tenant,
    key: SigningKey,
    endpoint: JwksEndpoint,
    status: int,
    document: object,
) -> None:
    """A JWKS answer that is an error, not JSON, or holds no RSA key gives 503."""
    endpoint.status = status
    endpoint.document = document
    with pytest.raises(CredentialUnavailableError):
        await authenticator.authenticate(bearer(tenant.token(key)))


async def test_jwks_recovery_after_a_short_backoff(
    authenticator: EntraAuthenticator,
    tenant: Tenant,
    key: SigningKey,
    endpoint: JwksEndpoint,
    clock: FakeClock,
) -> None:
    """After a failed cold fetch, retries wait a short back-off, then succeed once it is up."""
    endpoint.down = True
    token = tenant.token(key)
    with pytest.raises(CredentialUnavailableError):
        await authenticator.authenticate(bearer(token))
    endpoint.down = False
    with pytest.raises(CredentialUnavailableError):
        await authenticator.authenticate(bearer(token))
    assert endpoint.requests == 1
    clock.advance(1.5)
    assert await authenticator.authenticate(bearer(token))
    assert endpoint.requests == 2


async def test_expired_cache_is_refreshed(
    *,
    authenticator: EntraAuthenticator,
    tenant: Tenant,
    key: SigningKey,
    next_key: SigningKey,
    endpoint: JwksEndpoint,
    clock: FakeClock,
) -> None:
    """After ``ENTRA_JWKS_CACHE_SECONDS`` the keys are fetched again and removals apply."""
    await authenticator.authenticate(bearer(tenant.token(key)))
    endpoint.publish(next_key)
    clock.advance(3601)
    await rejection(authenticator, tenant.token(key))
    assert endpoint.requests == 2


async def test_stale_keys_serve_while_the_jwks_is_down(
    authenticator: EntraAuthenticator,
    tenant: Tenant,
    key: SigningKey,
    endpoint: JwksEndpoint,
    clock: FakeClock,
) -> None:
    """A failed scheduled refresh keeps the previous keys, so known tokens still pass."""
    await authenticator.authenticate(bearer(tenant.token(key)))
    endpoint.down = True
    clock.advance(3601)
    for _ in range(3):
        assert await authenticator.authenticate(bearer(tenant.token(key)))
    assert endpoint.requests == 2


async def test_unknown_kid_while_the_jwks_is_down_is_503(
    *,
    authenticator: EntraAuthenticator,
    tenant: Tenant,
    key: SigningKey,
    next_key: SigningKey,
    endpoint: JwksEndpoint,
    clock: FakeClock,
) -> None:
    """A new kid that cannot be checked because the re-fetch failed is 503, not 401."""
    await authenticator.authenticate(bearer(tenant.token(key)))
    endpoint.down = True
    clock.advance(61)
    with pytest.raises(CredentialUnavailableError):
        await authenticator.authenticate(bearer(tenant.token(next_key)))
