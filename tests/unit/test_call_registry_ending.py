"""The call registry while calls are hung up: each call counted once, active, ending or ended."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from engram_voice.realtime.calls import CallLimits, CallRegistry
from engram_voice.usage import MemoryUsageStore, UsageMeter
from tests.support.clock import FakeClock
from tests.support.opened_calls import HeldHangupCall

UPSTREAM = "azure-openai"


def _gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"upstream": UPSTREAM}) or 0.0


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def _add(registry: CallRegistry, call: HeldHangupCall, user: str = "alice") -> str:
    registry.reserve(user)
    live = await registry.add(
        user_id=user, agent_id="elena", upstream=UPSTREAM, session_id="vs_1", opened=call
    )
    await _settle()
    return live.call_id


def _counted(calls: dict[str, Any]) -> int:
    """Every call the section accounts for: active, ending, ended."""
    return int(calls["active"] + calls["ending"] + sum(calls["ended_by_reason"].values()))


Way = Callable[[CallRegistry, FakeClock, HeldHangupCall, str], Awaitable[Any] | None]


def _client_hangup(registry: CallRegistry, _: FakeClock, __: HeldHangupCall, call_id: str) -> Any:
    return registry.end(call_id, user_id="alice", reason="client_hangup")


def _max_duration(_: CallRegistry, clock: FakeClock, __: HeldHangupCall, ___: str) -> None:
    clock.advance(60)


def _upstream(_: CallRegistry, __: FakeClock, call: HeldHangupCall, ___: str) -> None:
    call.end_upstream("upstream_closed")


def _shutdown(registry: CallRegistry, _: FakeClock, __: HeldHangupCall, ___: str) -> Any:
    return registry.close()


WAYS: dict[str, tuple[Way, str]] = {
    "client_hangup": (_client_hangup, "client_hangup"),
    "max_duration": (_max_duration, "max_duration"),
    "upstream": (_upstream, "upstream_closed"),
    "shutdown": (_shutdown, "shutdown"),
}


@pytest.mark.parametrize("way", sorted(WAYS))
async def test_a_call_being_hung_up_is_ending_then_ended(way: str) -> None:
    """Whichever way a call ends, while its hang-up runs it is ending (not active, not ended)."""
    end, reason = WAYS[way]
    clock = FakeClock()
    registry = CallRegistry(
        CallLimits(max_seconds=60, max_per_user=1, drain_seconds=60), call_later=clock.call_later
    )
    active_before, ending_before = _gauge("engram_calls_active"), _gauge("engram_calls_ending")
    call = HeldHangupCall()
    call_id = await _add(registry, call)
    started = end(registry, clock, call, call_id)
    task = asyncio.ensure_future(started) if started is not None else None
    async with asyncio.timeout(5):
        await call.hanging.wait()
    during = registry.describe()
    assert (during["active"], during["ending"], during["ended_by_reason"]) == (0, 1, {})
    assert (during["active_by_upstream"], during["ending_by_upstream"]) == ({}, {UPSTREAM: 1})
    assert _gauge("engram_calls_active") == active_before
    assert _gauge("engram_calls_ending") == ending_before + 1
    registry.reserve("alice")  # a call being hung up holds no slot of its user
    registry.release("alice")
    call.released.set()
    async with asyncio.timeout(5):
        if task is not None:
            await task
        await registry.close()
    after = registry.describe()
    assert (after["active"], after["ending"], after["ending_by_upstream"]) == (0, 0, {})
    assert after["ended_by_reason"] == {reason: 1}
    assert call.hangups == [reason]
    assert _gauge("engram_calls_ending") == ending_before


async def test_a_hang_up_the_drain_abandons_is_counted_as_ended() -> None:
    """A hang-up still running at the drain bound leaves ending, counts as shutdown, is metered."""
    store = MemoryUsageStore()
    registry = CallRegistry(CallLimits(drain_seconds=0.1), meter=UsageMeter(store))
    ending_before = _gauge("engram_calls_ending")
    stuck, fine = HeldHangupCall(), HeldHangupCall()
    fine.released.set()
    await _add(registry, stuck)
    await _add(registry, fine, user="bob")
    async with asyncio.timeout(5):
        await registry.close()
    calls = registry.describe()
    assert (calls["active"], calls["ending"]) == (0, 0)
    assert calls["ended_by_reason"] == {"shutdown": 2}
    assert [call["seconds"] is not None for call in store.calls.values()] == [True, True]
    assert _gauge("engram_calls_ending") == ending_before


# -- the invariant under any interleaving ---------------------------------------------------

_step = st.one_of(
    st.just(("start", 0)),
    st.just(("tick", 0)),
    st.just(("shutdown", 0)),
    st.tuples(st.sampled_from(["hangup", "upstream", "release"]), st.integers(0, 7)),
)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_step, max_size=30))
def test_every_call_is_counted_once_at_every_step(steps: list[tuple[str, int]]) -> None:
    """Under any interleaving of starts, ends and hang-ups, every call is counted just once."""
    asyncio.run(_interleave(steps))


async def _interleave(steps: list[tuple[str, int]]) -> None:
    """Play ``steps``; after each, active + ending + ended == started, ending == hang-ups held."""
    clock = FakeClock()
    registry = CallRegistry(
        CallLimits(max_seconds=3, max_per_user=100, drain_seconds=60), call_later=clock.call_later
    )
    base = {name: _gauge(name) for name in ("engram_calls_active", "engram_calls_ending")}
    calls: list[tuple[str, HeldHangupCall]] = []
    pending: list[asyncio.Future[Any]] = []
    closing: asyncio.Future[None] | None = None

    def check() -> None:
        section = registry.describe()
        assert _counted(section) == len(calls)
        under_way = sum(c.hanging.is_set() and not c.released.is_set() for _, c in calls)
        assert section["ending"] == under_way
        assert _gauge("engram_calls_active") - base["engram_calls_active"] == section["active"]
        assert _gauge("engram_calls_ending") - base["engram_calls_ending"] == section["ending"]

    for action, index in steps:
        target = calls[index % len(calls)] if calls else None
        if action == "start" and closing is None:
            call = HeldHangupCall()
            calls.append((await _add(registry, call, user=f"u{len(calls)}"), call))
        elif action == "tick":
            clock.advance(1)
        elif action == "shutdown" and closing is None:
            closing = asyncio.ensure_future(registry.close())
        elif action == "hangup" and target is not None:
            end = registry.end(target[0], user_id=f"u{calls.index(target)}", reason="client_hangup")
            pending.append(asyncio.ensure_future(end))
        elif action == "upstream" and target is not None:
            target[1].end_upstream("upstream_closed")
        elif action == "release" and target is not None:
            target[1].released.set()
        await _settle()
        check()
    for _, call in calls:
        call.released.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*pending)
        await (closing if closing is not None else registry.close())
    check()
    assert (registry.active(), registry.ending()) == (0, 0)
