"""TurnCapture: upstream events in any realistic order become ordered, unique turns."""

from __future__ import annotations

import gc
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engram_voice.memory.schemas import EnrichMessage
from engram_voice.realtime.calls import capture as capture_module
from engram_voice.realtime.calls.capture import MAX_READY, TurnCapture


class Store:
    """Collects what the capture stores; fails the first ``failures`` calls."""

    def __init__(self, failures: int = 0) -> None:
        self.batches: list[list[EnrichMessage]] = []
        self.failures = failures

    async def __call__(self, messages: Sequence[EnrichMessage]) -> None:
        """Store ``messages`` (or fail)."""
        if self.failures:
            self.failures -= 1
            raise RuntimeError("queue down")
        self.batches.append(list(messages))

    def turns(self) -> list[tuple[str, str, str]]:
        """Return (id, role, text) of everything stored, in order."""
        return [(m.id, m.role, m.text) for batch in self.batches for m in batch]


def added(
    item_id: str, role: str, previous: str | None, name: str = "conversation.item.added"
) -> dict[str, Any]:
    """Return an item event for a message of ``role`` after ``previous``."""
    item = {"id": item_id, "type": "message", "role": role, "content": []}
    return {"type": name, "item": item, "previous_item_id": previous}


def user_text(item_id: str, text: str) -> dict[str, Any]:
    """Return a user transcript event."""
    return {
        "type": "conversation.item.input_audio_transcription.completed",
        "item_id": item_id,
        "transcript": text,
    }


def assistant_text(
    item_id: str, text: str, name: str = "response.output_audio_transcript.done"
) -> dict[str, Any]:
    """Return an assistant transcript event."""
    return {"type": name, "item_id": item_id, "transcript": text}


def conversation(turns: int) -> list[list[dict[str, Any]]]:
    """Return per-turn event lists: user item, assistant item, then the two transcripts."""
    out, previous = [], None
    for n in range(turns):
        user, answer = f"item_u{n}", f"item_a{n}"
        out.append(
            [
                added(user, "user", previous),
                added(answer, "assistant", user),
                user_text(user, f"user {n}"),
                assistant_text(answer, f"answer {n}"),
            ]
        )
        previous = answer
    return out


def expected(turns: int) -> list[tuple[str, str, str]]:
    """Return the turns of :func:`conversation` in conversation order."""
    return [
        turn
        for n in range(turns)
        for turn in (
            (f"item_u{n}", "user", f"user {n}"),
            (f"item_a{n}", "assistant", f"answer {n}"),
        )
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(2))))
async def test_transcripts_in_any_order_within_a_turn_are_stored_in_conversation_order(
    order: tuple[int, ...],
) -> None:
    """Whether the user's or the assistant's transcript arrives first, order follows the items."""
    store = Store()
    capture = TurnCapture(upstream="test", call_id="rtc_1", session_id="vs_1", store=store)
    for events in conversation(3):
        items, transcripts = events[:2], events[2:]
        for event in [*items, *(transcripts[i] for i in order)]:
            capture.feed(event)
    await capture.close()
    assert store.turns() == expected(3)


async def test_turns_held_before_the_owner_is_known_are_stored_after_bind() -> None:
    """Events arriving before the store is bound are kept and stored once it is."""
    capture = TurnCapture(upstream="test", call_id="rtc_1", session_id="vs_1")
    for event in itertools.chain.from_iterable(conversation(2)):
        capture.feed(event)
    store = Store()
    capture.bind(store)
    await capture.close()
    assert store.turns() == expected(2)


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"type": "conversation.item.added", "item": "nope"},
        {"type": "conversation.item.added", "item": {"id": 3}},
        {"type": "response.output_audio_transcript.done", "item_id": None, "transcript": "x"},
        {"type": "conversation.item.input_audio_transcription.completed", "item_id": "i"},
        {"type": "response.done", "response": None},
        {"type": "response.done", "response": {"usage": "many"}},
    ],
)
async def test_malformed_events_are_ignored(event: dict[str, Any]) -> None:
    """A malformed event neither raises nor stores anything."""
    store = Store()
    usage: list[Any] = []
    capture = TurnCapture(
        upstream="test",
        call_id="rtc_1",
        session_id="vs_1",
        store=store,
        on_usage=lambda *a: usage.append(a),
    )
    capture.feed(event)
    await capture.close()
    assert store.turns() == []
    assert usage == []


async def test_a_failed_user_transcription_does_not_hold_the_answer() -> None:
    """A user item whose transcription failed is skipped; the answer is stored."""
    store = Store()
    capture = TurnCapture(upstream="test", call_id="rtc_1", session_id="vs_1", store=store)
    capture.feed(added("item_u", "user", None))
    capture.feed(added("item_a", "assistant", "item_u"))
    capture.feed(assistant_text("item_a", "hello"))
    capture.feed(
        {"type": "conversation.item.input_audio_transcription.failed", "item_id": "item_u"}
    )
    await capture.close()
    assert store.turns() == [("item_a", "assistant", "hello")]


async def test_voice_live_names_are_captured() -> None:
    """Voice Live's beta names (item.created, audio_transcript.done) are captured too."""
    store = Store()
    capture = TurnCapture(upstream="voice-live", call_id="rtc_1", session_id="vs_1", store=store)
    capture.feed(added("item_u", "user", None, name="conversation.item.created"))
    capture.feed(added("item_a", "assistant", "item_u", name="conversation.item.created"))
    capture.feed(assistant_text("item_a", "hi", name="response.audio_transcript.done"))
    capture.feed(user_text("item_u", "hello"))
    await capture.close()
    assert store.turns() == [("item_u", "user", "hello"), ("item_a", "assistant", "hi")]


async def test_store_failures_are_retried_then_counted() -> None:
    """A failing store is retried; after the last attempt the turns are counted as failed."""
    flaky, down = Store(failures=1), Store(failures=10)
    for store in (flaky, down):
        capture = TurnCapture(
            upstream="test", call_id="rtc_1", session_id="vs_1", store=store, retry_seconds=0
        )
        for event in conversation(1)[0]:
            capture.feed(event)
        await capture.close()
        if store is flaky:
            assert store.turns() == expected(1)
        else:
            assert store.turns() == []
            assert capture.counts["failed"] == 2


async def test_usage_goes_to_the_hook() -> None:
    """response.done usage is handed to on_usage with the call's session id (before binding)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    capture = TurnCapture(
        upstream="test",
        call_id="rtc_9",
        session_id="vs_1",
        on_usage=lambda c, u: seen.append((c, u)),
    )
    usage = {"total_tokens": 3, "input_tokens": 1, "output_tokens": 2}
    capture.feed({"type": "response.done", "response": {"usage": usage}})
    assert seen == [("vs_1", usage)]


async def test_memory_is_bounded_without_a_store() -> None:
    """With no store bound, at most MAX_READY turns wait; the rest are dropped and counted."""
    capture = TurnCapture(upstream="test", call_id="rtc_1", session_id="vs_1")
    turns = MAX_READY // 2 + 10
    for event in itertools.chain.from_iterable(conversation(turns)):
        capture.feed(event)
    assert capture.counts["dropped"] == 2 * turns - MAX_READY
    await capture.close()


async def test_usage_is_reported_under_the_services_call_id_once_bound() -> None:
    """Before the registry holds the call usage names the session; afterwards the call id."""
    seen: list[str] = []
    capture = TurnCapture(
        upstream="test", call_id="rtc_9", session_id="vs_1", on_usage=lambda c, _: seen.append(c)
    )
    done = {"type": "response.done", "response": {"usage": {"total_tokens": 1}}}
    capture.feed(done)
    capture.usage_call_id = "rc_1"
    capture.feed(done)
    assert seen == ["vs_1", "rc_1"]


async def test_turns_are_not_kept_when_there_is_nowhere_to_store_them() -> None:
    """With memory disabled (keep_turns off) no turn waits in memory."""
    capture = TurnCapture(upstream="test", call_id="rtc_1", session_id="vs_1")
    capture.keep_turns = False
    for event in itertools.chain.from_iterable(conversation(5)):
        capture.feed(event)
    assert capture.counts == {}
    await capture.close()


def _live_items() -> list[Any]:
    """Return every capture item object alive in this process (what the collector scans)."""
    gc.collect()
    return [o for o in gc.get_objects() if type(o) is capture_module._Item]


@pytest.mark.parametrize("turns", [1, 7, 300])
async def test_released_turns_leave_no_object_or_transcript_behind(turns: int) -> None:
    """Once stored, a turn keeps only its id: no per-item object and no transcript in memory."""
    store = Store()
    capture = TurnCapture(upstream="test", call_id="rtc_1", session_id="vs_1", store=store)
    before = len(_live_items())
    for event in itertools.chain.from_iterable(conversation(turns)):
        capture.feed(event)
    capture.feed(added("item_pending", "user", f"item_a{turns - 1}"))  # still waiting
    live = _live_items()
    assert len(live) - before == 1
    assert all(item.text is None for item in live)
    await capture.close()
    assert store.turns() == expected(turns)


@settings(max_examples=150, deadline=None)
@given(data=st.data())
async def test_repeated_and_late_events_store_each_turn_once_in_order(data: st.DataObject) -> None:
    """Repeats (before or after release) change nothing; a failed transcription drops one turn."""
    turns = data.draw(st.integers(1, 6))
    stream = list(itertools.chain.from_iterable(conversation(turns)))
    for _ in range(data.draw(st.integers(0, 12))):
        original = data.draw(st.integers(0, len(stream) - 1))
        stream.insert(data.draw(st.integers(original + 1, len(stream))), stream[original])
    failed = set(data.draw(st.lists(st.integers(0, turns - 1), max_size=2)))
    for n in failed:
        failure = {"type": "conversation.item.input_audio_transcription.failed"}
        stream.insert(data.draw(st.integers(0, len(stream))), {**failure, "item_id": f"item_u{n}"})
    store = Store()
    capture = TurnCapture(upstream="test", call_id="rtc_1", session_id="vs_1", store=store)
    for event in stream:
        capture.feed(event)
    await capture.close()
    left_out = [turn for turn in expected(turns) if turn not in store.turns()]
    assert store.turns() == [turn for turn in expected(turns) if turn not in left_out]
    assert {turn[0] for turn in left_out} <= {f"item_u{n}" for n in failed}
