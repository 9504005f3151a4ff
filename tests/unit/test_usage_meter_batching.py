"""The meter's token batching: the store gets the same totals, in order, with fewer writes."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from engram_voice.usage import MemoryUsageStore, UsageMeter
from engram_voice.usage.meter import TOKEN_FLUSH_SECONDS
from engram_voice.usage.records import CallEnded, CallStarted, TokensUsed, UsageWrite
from tests.support.clock import UNIX_2027, FakeClock


class RecordingStore(MemoryUsageStore):
    """A memory store that also keeps every write in the order it came."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[UsageWrite] = []

    def record(self, write: UsageWrite) -> bool:
        """Keep the write, then apply it."""
        self.writes.append(write)
        return super().record(write)


_usage = st.fixed_dictionaries(
    {
        "input_tokens": st.integers(0, 500),
        "output_tokens": st.integers(0, 500),
        "input_token_details": st.fixed_dictionaries(
            {"audio_tokens": st.integers(0, 200), "cached_tokens": st.integers(0, 50)}
        ),
        "output_token_details": st.fixed_dictionaries({"audio_tokens": st.integers(0, 200)}),
    }
)
# One step: start a call, a response.done on a call, end a call (by index into 4 calls).
_step = st.tuples(st.sampled_from(["start", "done", "done", "end"]), st.integers(0, 3), _usage)


def _play(meter: UsageMeter, steps: list[tuple[str, int, dict[str, Any]]]) -> None:
    for action, index, usage in steps:
        call_id = f"rc_{index}"
        if action == "start":
            meter.call_started(call_id, f"user{index}", "elena", "azure-openai")
        elif action == "done":
            meter.response_done(call_id, usage)
        else:
            meter.call_ended(call_id, 3.0, "client_hangup")


def _order_holds(writes: list[UsageWrite]) -> bool:
    """Within each call: its start first, its end after every token write before the end."""
    seen: dict[str, str] = {}
    for write in writes:
        state = seen.get(write.call_id)
        if isinstance(write, CallStarted):
            seen[write.call_id] = "started"
        elif isinstance(write, TokensUsed) and state is None:
            return False
        elif isinstance(write, CallEnded):
            seen[write.call_id] = "ended"
    return True


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, max_size=40))
def test_batched_tokens_reach_the_store_with_the_same_totals_and_order(
    steps: list[tuple[str, int, dict[str, Any]]],
) -> None:
    """On a loop, any run of starts, responses and ends stores exactly what direct writes do."""
    direct = RecordingStore()
    _play(UsageMeter(direct, clock=FakeClock(UNIX_2027)), steps)  # no loop: written at once

    async def batched_run() -> RecordingStore:
        store = RecordingStore()
        meter = UsageMeter(store, clock=FakeClock(UNIX_2027))
        _play(meter, steps)
        await meter.close()
        return store

    batched = asyncio.run(batched_run())
    assert batched.calls == direct.calls
    assert batched._days == direct._days
    assert _order_holds(batched.writes) == _order_holds(direct.writes)
    assert sum(isinstance(w, TokensUsed) for w in batched.writes) <= sum(
        isinstance(w, TokensUsed) for w in direct.writes
    )


@given(responses=st.lists(_usage, min_size=2, max_size=30), calls=st.integers(1, 5))
@settings(max_examples=30, deadline=None)
def test_responses_within_an_interval_become_one_store_write_per_call(
    responses: list[dict[str, Any]], calls: int
) -> None:
    """Many response.done events on a loop reach the store as at most one token write per call."""

    async def run() -> RecordingStore:
        store = RecordingStore()
        meter = UsageMeter(store, clock=FakeClock(UNIX_2027))
        for index in range(calls):
            meter.call_started(f"rc_{index}", "alice", "elena", "azure-openai")
        for turn, usage in enumerate(responses):
            meter.response_done(f"rc_{turn % calls}", {**usage, "input_tokens": 1})
        meter.flush_tokens()
        return store

    store = asyncio.run(run())
    token_writes = [w for w in store.writes if isinstance(w, TokensUsed)]
    assert len(token_writes) == min(calls, len(responses))
    assert sum(w.tokens["input_text"] for w in token_writes) >= 0
    assert sum(store.calls[f"rc_{i}"]["tokens"]["input_audio"] for i in range(calls)) == sum(
        u["input_token_details"]["audio_tokens"] for u in responses
    )


async def test_held_tokens_reach_the_store_on_their_own_within_the_interval() -> None:
    """Without a close or a call end, the held counts are written once the interval passes."""
    store = RecordingStore()
    meter = UsageMeter(store, clock=FakeClock(UNIX_2027))
    meter.call_started("rc_1", "alice", "elena", "azure-openai")
    meter.response_done("rc_1", {"input_tokens": 7})
    deadline = asyncio.get_running_loop().time() + 10 * TOKEN_FLUSH_SECONDS
    while not any(isinstance(w, TokensUsed) for w in store.writes):
        assert asyncio.get_running_loop().time() < deadline, "held tokens never written"
        await asyncio.sleep(0.05)
    assert store.calls["rc_1"]["tokens"]["input_text"] == 7
