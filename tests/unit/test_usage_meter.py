"""The usage meter: tolerant of odd usage objects, daily limits across UTC midnight, counters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from engram_voice.errors import UsageLimitReachedError
from engram_voice.usage import MemoryUsageStore, UsageMeter, UsageSettings, tokens_from_usage
from engram_voice.usage.records import TOKEN_KINDS
from tests.support.clock import FakeClock

MIDNIGHT = datetime(2027, 3, 1, tzinfo=UTC).timestamp()
FULL = {
    "total_tokens": 115,
    "input_tokens": 70,
    "output_tokens": 45,
    "input_token_details": {"text_tokens": 20, "audio_tokens": 50, "cached_tokens": 8},
    "output_token_details": {"text_tokens": 15, "audio_tokens": 30},
}

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=25), inner, max_size=4)
    ),
    max_leaves=12,
)
_usage_keys = st.sampled_from(
    ["input_tokens", "output_tokens", "total_tokens", "input_token_details", "output_token_details"]
)
_odd_usage = _json | st.dictionaries(_usage_keys, _json, max_size=5)


def _meter(clock: FakeClock, **limits: int) -> UsageMeter:
    return UsageMeter(MemoryUsageStore(), UsageSettings(**limits), clock=clock)


def test_a_full_usage_object_is_split_by_kind() -> None:
    """The SDK's RealtimeResponseUsage fields map onto the five token kinds."""
    assert tokens_from_usage(FULL) == {
        "input_text": 20,
        "input_audio": 50,
        "input_cached": 8,
        "output_text": 15,
        "output_audio": 30,
    }


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        ({"input_tokens": 9, "output_tokens": 4}, {"input_text": 9, "output_text": 4}),
        ({"input_tokens": -5, "output_tokens": "7"}, {}),
        (
            {"input_tokens": 3.0, "input_token_details": {"audio_tokens": 2}},
            {"input_text": 1, "input_audio": 2},
        ),
        ({"input_tokens": True, "input_token_details": None}, {}),
        ({"output_token_details": {"audio_tokens": float("nan")}}, {}),
        ({"input_tokens": 10**12}, {}),
        (None, {}),
        ([1, 2], {}),
    ],
)
def test_odd_usage_fields_count_as_zero(usage: object, expected: dict[str, int]) -> None:
    """Missing, negative, textual, boolean, NaN or absurd counts are 0; the rest is kept."""
    assert tokens_from_usage(usage) == {kind: expected.get(kind, 0) for kind in TOKEN_KINDS}


@given(usage=_odd_usage)
def test_the_meter_never_raises_on_any_usage_object(usage: Any) -> None:
    """Whatever response.done carries, the meter counts non-negative integers and never raises."""
    meter = _meter(FakeClock(MIDNIGHT))
    meter.call_started("c1", "alice", "elena", "azure-openai")
    meter.response_done("c1", usage)
    meter.response_done("unknown-call", usage)
    tokens = tokens_from_usage(usage)
    assert all(isinstance(v, int) and v >= 0 for v in tokens.values())
    meter.call_ended("c1", float("inf"), "client_hangup")


async def test_the_calls_limit_resets_at_utc_midnight() -> None:
    """A call past the day's limit gets Retry-After until UTC midnight; the next day is fresh."""
    clock = FakeClock(MIDNIGHT - 90)
    meter = _meter(clock, max_calls_per_day=2)
    await meter.start()
    for call_id in ("c1", "c2"):
        meter.check("alice")
        meter.call_started(call_id, "alice", "elena", "azure-openai")
        meter.call_ended(call_id, 1.0, "client_hangup")
    with pytest.raises(UsageLimitReachedError) as refused:
        meter.check("alice")
    assert (refused.value.retry_after, refused.value.extra) == (90, {"limit": "calls"})
    assert refused.value.status == 429
    meter.check("bob")  # other users are unaffected
    clock.advance(90)
    meter.check("alice")


async def test_the_minutes_limit_counts_live_calls_elapsed_time() -> None:
    """Ended seconds plus a live call's elapsed time reach the minutes limit; midnight resets it."""
    clock = FakeClock(MIDNIGHT - 3600)
    meter = _meter(clock, max_minutes_per_day=2)
    meter.call_started("c1", "alice", "elena", "azure-openai")
    meter.call_ended("c1", 60.0, "client_hangup")
    meter.call_started("c2", "alice", "elena", "azure-openai")
    clock.advance(59)
    meter.check("alice")  # 60 + 59 seconds
    clock.advance(1)
    with pytest.raises(UsageLimitReachedError) as refused:
        meter.check("alice")
    assert refused.value.extra == {"limit": "minutes"}
    assert refused.value.retry_after == 3600 - 60
    clock.advance(3600)
    meter.check("alice")  # the live call counts on its start day, yesterday


async def test_todays_totals_survive_a_restart_through_the_store() -> None:
    """A new meter on the same store starts with today's calls counted (limits are not reset)."""
    clock = FakeClock(MIDNIGHT + 60)
    store = MemoryUsageStore()
    first = UsageMeter(store, UsageSettings(max_calls_per_day=1), clock=clock)
    await first.start()
    first.call_started("c1", "alice", "elena", "azure-openai")
    second = UsageMeter(store, UsageSettings(max_calls_per_day=1), clock=clock)
    await second.start()
    with pytest.raises(UsageLimitReachedError):
        second.check("alice")


def test_a_call_end_logs_its_usage_and_counts_by_agent() -> None:
    """realtime.call_usage carries the call's seconds and tokens; the counters move by agent."""
    labels = {"agent": "marcus", "upstream": "voice-live"}
    before = REGISTRY.get_sample_value("engram_usage_call_seconds_total", labels) or 0.0
    tokens_before = (
        REGISTRY.get_sample_value("engram_usage_tokens_total", {**labels, "kind": "output_audio"})
        or 0.0
    )
    meter = _meter(FakeClock(MIDNIGHT))
    meter.call_started("c9", "alice", "marcus", "voice-live")
    meter.response_done("c9", FULL)
    with capture_logs() as logs:
        meter.call_ended("c9", 12.5, "client_hangup")
    (event,) = [e for e in logs if e["event"] == "realtime.call_usage"]
    assert event["call_id"] == "c9"
    assert event["user_id"] == "alice"
    assert (event["agent"], event["upstream"], event["seconds"]) == ("marcus", "voice-live", 12.5)
    assert event["tokens"] == tokens_from_usage(FULL)
    assert REGISTRY.get_sample_value("engram_usage_call_seconds_total", labels) == before + 12.5
    assert (
        REGISTRY.get_sample_value("engram_usage_tokens_total", {**labels, "kind": "output_audio"})
        == tokens_before + 30
    )


def test_a_late_response_done_still_counts_on_its_ended_call() -> None:
    """Usage that arrives just after the hang-up is still recorded on the call."""
    store = MemoryUsageStore()
    meter = UsageMeter(store, clock=FakeClock(MIDNIGHT))
    meter.call_started("c1", "alice", "elena", "azure-openai")
    meter.call_ended("c1", 5.0, "client_hangup")
    meter.response_done("c1", FULL)
    assert store.calls["c1"]["tokens"]["input_audio"] == 50


def test_usage_reported_by_session_id_counts_on_the_call() -> None:
    """The sideband may name the call by its session id (vs_…) instead of the call id."""
    store = MemoryUsageStore()
    meter = UsageMeter(store, clock=FakeClock(MIDNIGHT))
    meter.call_started("rc_1", "alice", "elena", "azure-openai", session_id="vs_1")
    meter.response_done("vs_1", FULL)
    meter.call_ended("rc_1", 5.0, "client_hangup")
    meter.response_done("vs_1", FULL)  # late, after the end
    assert store.calls["rc_1"]["tokens"]["output_text"] == 30


async def test_the_status_section_totals_today_without_user_ids() -> None:
    """/status usage sums today's calls and seconds (live ones included) and names no user."""
    clock = FakeClock(MIDNIGHT + 100)
    meter = _meter(clock, max_calls_per_day=5)
    meter.call_started("c0", "zed", "elena", "azure-openai", started_at=MIDNIGHT - 50)  # yesterday
    meter.call_started("c1", "alice", "elena", "azure-openai")
    meter.call_ended("c1", 30.0, "client_hangup")
    meter.call_started("c2", "bob", "elena", "azure-openai")
    clock.advance(10)
    described = await meter.describe()
    assert described["today"] == {"calls": 2, "seconds": 40.0, "users": 2}
    assert described["live_calls"] == 2
    assert described["limits"] == {
        "max_calls_per_day": 5,
        "max_minutes_per_day": 0,
        "stored_totals_loaded": False,  # never started: no store was read
    }
    assert "alice" not in str(described)
