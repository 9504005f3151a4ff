"""Per-user mint rate limit: a moving window per user, with a truthful Retry-After."""

from __future__ import annotations

import pytest

from engram_voice.auth import MintRateLimiter
from engram_voice.errors import RateLimitedError
from tests.support.clock import FakeClock
from tests.support.polling import async_poll_until


async def test_allows_the_limit_then_refuses_with_retry_after() -> None:
    """Three mints per minute pass; the fourth raises 429 with 1..60 s to wait."""
    limiter = MintRateLimiter("3/minute")
    for _ in range(3):
        await limiter.check("ada")
    with pytest.raises(RateLimitedError) as info:
        await limiter.check("ada")
    assert info.value.status == 429
    assert info.value.retry_after is not None
    assert 1 <= info.value.retry_after <= 60
    assert "3 per 1 minute" in info.value.detail


async def test_refused_attempts_do_not_extend_the_wait() -> None:
    """Hammering while limited is not counted, so the wait never grows past the window."""
    limiter = MintRateLimiter("2/minute")
    await limiter.check("ada")
    await limiter.check("ada")
    for _ in range(10):
        with pytest.raises(RateLimitedError) as info:
            await limiter.check("ada")
        assert info.value.retry_after is not None
        assert info.value.retry_after <= 60


async def test_other_users_are_unaffected() -> None:
    """One user exhausting the limit leaves every other user's allowance intact."""
    limiter = MintRateLimiter("2/minute")
    await limiter.check("ada")
    await limiter.check("ada")
    with pytest.raises(RateLimitedError):
        await limiter.check("ada")
    await limiter.check("grace")
    await limiter.check("grace")


async def test_the_longest_exhausted_window_sets_retry_after() -> None:
    """With ``5/minute;2/hour`` the hourly window is hit first and asks for minutes, not s."""
    limiter = MintRateLimiter("5/minute;2/hour")
    await limiter.check("ada")
    await limiter.check("ada")
    with pytest.raises(RateLimitedError) as info:
        await limiter.check("ada")
    assert info.value.retry_after is not None
    assert 60 < info.value.retry_after <= 3600


async def test_disabled_limiter_never_refuses() -> None:
    """With the limit turned off (``None``) any number of mints pass."""
    limiter = MintRateLimiter(None)
    assert not limiter.enabled
    for _ in range(100):
        await limiter.check("ada")


async def test_a_slot_frees_when_the_window_moves_on() -> None:
    """After the oldest mint leaves a one-second window, the user may mint again."""
    limiter = MintRateLimiter("1/second")
    await limiter.check("ada")
    with pytest.raises(RateLimitedError):
        await limiter.check("ada")

    async def allowed() -> bool:
        try:
            await limiter.check("ada")
        except RateLimitedError:
            return False
        return True

    await async_poll_until(allowed, timeout=10, interval=0.1, what="the window moving on")


async def test_retry_after_is_when_the_oldest_counted_mint_leaves_the_window() -> None:
    """With 2/minute used at t=0 and t=20, a refusal at t=30 asks to wait 30 s."""
    clock = FakeClock()
    limiter = MintRateLimiter("2/minute", clock=clock)
    await limiter.check("ada")
    clock.now += 20
    await limiter.check("ada")
    clock.now += 10
    with pytest.raises(RateLimitedError) as info:
        await limiter.check("ada")
    assert info.value.retry_after == 30
    clock.now += 30
    await limiter.check("ada")  # the t=0 mint left the window


async def test_the_user_table_is_bounded_forgetting_the_least_recent_user() -> None:
    """Past ``max_users`` the least recently seen user is forgotten (and starts afresh)."""
    clock = FakeClock()
    limiter = MintRateLimiter("1/minute", clock=clock, max_users=2)
    await limiter.check("ada")
    await limiter.check("grace")
    await limiter.check("linus")  # ada is forgotten
    await limiter.check("ada")
    with pytest.raises(RateLimitedError):
        await limiter.check("linus")
