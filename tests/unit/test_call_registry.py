"""The call registry: each call ends once whichever way comes first, limits, the drain."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from engram_voice.envreader import EnvReader
from engram_voice.errors import TooManyCallsError, UpstreamUnavailableError
from engram_voice.realtime.calls import CallLimits, CallRegistry
from engram_voice.realtime.settings import RealtimeSettings
from tests.support.clock import FakeClock
from tests.support.opened_calls import StandInCall


async def _add(registry: CallRegistry, call: StandInCall, user: str = "alice") -> str:
    registry.reserve(user)
    live = await registry.add(
        user_id=user, agent_id="elena", upstream="azure-openai", session_id="vs_1", opened=call
    )
    await _settle()  # the timer and the watcher are waiting now
    return live.call_id


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_an_upstream_end_removes_the_call_with_the_upstreams_reason() -> None:
    """When the upstream ends a call, it leaves the registry under the upstream's reason."""
    registry = CallRegistry(CallLimits())
    call = StandInCall()
    call_id = await _add(registry, call)
    call.end_upstream("upstream_closed")
    await _settle()
    assert registry.get(call_id) is None
    assert registry.describe()["ended_by_reason"] == {"upstream_closed": 1}
    registry.reserve("alice")  # the slot came back
    registry.reserve("alice")


async def test_the_maximum_duration_ends_the_call_on_the_registry_clock() -> None:
    """The duration timer hangs the call up with ``max_duration`` once its time has passed."""
    clock = FakeClock()
    registry = CallRegistry(CallLimits(max_seconds=60), call_later=clock.call_later)
    call = StandInCall()
    call_id = await _add(registry, call)
    clock.advance(59)
    await _settle()
    assert registry.get(call_id) is not None
    clock.advance(1)
    await _settle()
    assert registry.get(call_id) is None
    assert call.hangups == ["max_duration"]


WAYS = ("client_hangup", "max_duration", "upstream", "shutdown")


@pytest.mark.parametrize("order", list(itertools.permutations(WAYS)))
async def test_a_call_ends_exactly_once_whichever_ways_race(order: tuple[str, ...]) -> None:
    """All four ways of ending fired together (in any order) end the call once."""
    clock = FakeClock()
    registry = CallRegistry(CallLimits(max_seconds=10), call_later=clock.call_later)
    call = StandInCall()
    call_id = await _add(registry, call)
    actions = {
        "client_hangup": lambda: registry.end(call_id, user_id="alice", reason="client_hangup"),
        "max_duration": lambda: _advance(clock, 10),
        "upstream": lambda: _end_upstream(call),
        "shutdown": registry.close,
    }
    await asyncio.gather(*(actions[way]() for way in order))
    await _settle()
    assert registry.get(call_id) is None
    assert len(call.hangups) <= 1
    assert sum(registry.describe()["ended_by_reason"].values()) == 1


async def _advance(clock: FakeClock, seconds: float) -> None:
    clock.advance(seconds)


async def _end_upstream(call: StandInCall) -> None:
    call.end_upstream("upstream_closed")


async def test_the_per_user_limit_counts_calls_being_set_up_and_live_ones() -> None:
    """A user's slots are taken at reservation; other users are unaffected; release frees one."""
    registry = CallRegistry(CallLimits(max_per_user=2))
    await _add(registry, StandInCall())
    registry.reserve("alice")  # a second call still being set up
    with pytest.raises(TooManyCallsError) as refused:
        registry.reserve("alice")
    assert refused.value.retry_after is not None
    assert 1 <= refused.value.retry_after <= 60
    registry.reserve("bob")
    registry.release("alice")
    registry.reserve("alice")


async def test_only_the_owner_can_end_a_call() -> None:
    """Ending someone else's call, an unknown one or an ended one reports False."""
    registry = CallRegistry(CallLimits())
    call = StandInCall()
    call_id = await _add(registry, call)
    assert not await registry.end(call_id, user_id="mallory", reason="client_hangup")
    assert not await registry.end("rc_unknown", user_id="alice", reason="client_hangup")
    assert await registry.end(call_id, user_id="alice", reason="client_hangup")
    assert not await registry.end(call_id, user_id="alice", reason="client_hangup")
    assert call.hangups == ["client_hangup"]


async def test_the_drain_is_bounded_even_when_a_hangup_never_returns() -> None:
    """Shutdown gives up on a stuck hang-up after the drain bound and cancels every task."""
    registry = CallRegistry(CallLimits(drain_seconds=0.2))
    await _add(registry, StandInCall(stuck=True))
    fine = StandInCall()
    await _add(registry, fine, user="bob")
    async with asyncio.timeout(5):
        await registry.close()
    assert registry.active() == 0
    assert fine.hangups == ["shutdown"]
    assert registry._tasks == set()


async def test_a_call_opened_while_shutting_down_is_hung_up_and_refused() -> None:
    """A call whose setup finishes after the drain began is hung up, and the caller gets 502."""
    registry = CallRegistry(CallLimits())
    await registry.close()
    call = StandInCall()
    registry.reserve("alice")
    with pytest.raises(UpstreamUnavailableError):
        await registry.add(
            user_id="alice", agent_id="elena", upstream="azure-openai", session_id="s", opened=call
        )
    assert call.hangups == ["shutdown"]
    registry.reserve("alice")
    registry.reserve("alice")


@pytest.mark.parametrize(
    ("limit", "azure", "voice_live"), [(60, 60, 60), (1800, 1800, 1800), (5000, 1800, 3600)]
)
def test_the_maximum_duration_never_exceeds_the_upstreams_cap(
    limit: float, azure: float, voice_live: float
) -> None:
    """CALL_MAX_SECONDS applies per upstream, capped at Azure OpenAI 1800 s, Voice Live 3600 s."""
    registry = CallRegistry(CallLimits(max_seconds=limit))
    assert (registry.max_seconds("azure-openai"), registry.max_seconds("voice-live")) == (
        azure,
        voice_live,
    )


def test_limits_come_from_the_realtime_settings() -> None:
    """The call limits are CALL_MAX_SECONDS and CALL_MAX_CONCURRENT_PER_USER; the drain defaults."""
    env = {
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "never-sent",
        "CALL_MAX_SECONDS": "90",
        "CALL_MAX_CONCURRENT_PER_USER": "5",
    }
    reader = EnvReader(env)
    realtime = RealtimeSettings.from_env(reader)
    reader.raise_if_invalid()
    assert CallLimits.from_settings(realtime) == CallLimits(90.0, 5, 10.0)


@pytest.mark.parametrize("calls", [1, 7, 60])
async def test_each_live_call_holds_one_task_and_ends_on_its_timer(calls: int) -> None:
    """A held call costs one waiting task (its watcher); its duration is a timer, not a task."""
    clock = FakeClock()
    registry = CallRegistry(
        CallLimits(max_seconds=30, max_per_user=calls), call_later=clock.call_later
    )
    before = len(asyncio.all_tasks())
    held = [StandInCall() for _ in range(calls)]
    for call in held:
        await _add(registry, call)
    assert len(asyncio.all_tasks()) - before == calls
    clock.advance(30)
    await _settle()
    assert registry.active() == 0
    assert [call.hangups for call in held] == [["max_duration"]] * calls
    assert len(asyncio.all_tasks()) == before
