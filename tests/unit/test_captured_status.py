"""``/status`` counts captures waiting for their first item apart from live captures.

A call whose sideband is up but whose first item has yet to show that the sideband heard
the conversation from its start is still ``expected`` (the browser's posts are held
back); operators see such calls as ``awaiting_first_item``, never hidden and never
counted as ``captured``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.memory import build_memory_runtime
from engram_voice.memory.captured import CaptureAuthority
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink

MARKS = {
    "pending": {"captured": True, "pending": True},
    "captured": {"captured": True},
    "suspended": {"captured": True, "suspended": True},
    "final": {"captured": True, "final": True},
    "lost": {"captured": False},
}
"""Every mark a sideband's state hooks send, by the state it leaves the session in."""


def expected_counts(steps: list[tuple[int, str]]) -> tuple[int, int]:
    """Return (captured, awaiting_first_item) as the sessions' last marks say."""
    last = dict(steps)
    return (
        sum(1 for mark in last.values() if mark == "captured"),
        sum(1 for mark in last.values() if mark == "pending"),
    )


async def run_marks(steps: list[tuple[int, str]]) -> dict[str, object]:
    """Apply ``steps`` to an authority on a real SQLite queue; return its ``/status`` part."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = FakeClock()
        queue = SqliteTurnQueue(Path(tmp) / "q.sqlite3", clock=clock)
        await queue.open()
        authority = CaptureAuthority(queue, clock=clock, timeout=5)
        try:
            for session, mark in steps:
                authority.mark(f"vs_{session}", "alice", "elena", **MARKS[mark])
            await authority.settle(5)
            return authority.describe()
        finally:
            await queue.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=3), st.sampled_from(sorted(MARKS))),
        max_size=12,
    )
)
def test_status_counts_each_session_by_its_last_mark(steps: list[tuple[int, str]]) -> None:
    """Any sequence of marks leaves each session counted once, as its last mark says."""
    described = asyncio.run(run_marks(steps))
    captured, awaiting = expected_counts(steps)
    assert (described["captured"], described["awaiting_first_item"]) == (captured, awaiting)


async def test_memory_status_shows_a_call_awaiting_its_first_item(tmp_path: Path) -> None:
    """A sideband up without a first item shows in memory ``/status`` until the item comes."""
    reader = EnvReader({"MEMORY_SQLITE_PATH": str(tmp_path / "q.sqlite3"), "MEMORY_WORKER": "off"})
    memory_settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    runtime = build_memory_runtime(
        memory_settings, token_keys=[("k1", Secret("k" * 64))], sink=FakeSink()
    )
    await runtime.start()
    try:
        runtime.mark_captured("vs_1", captured=True, pending=True, user_id="alice", agent="elena")
        waiting = (await runtime.status())["captured_sessions"]
        runtime.mark_captured("vs_1", captured=True, user_id="alice", agent="elena")
        began = (await runtime.status())["captured_sessions"]
    finally:
        await runtime.stop()
    assert (waiting["awaiting_first_item"], waiting["captured"]) == (1, 0)
    assert (began["awaiting_first_item"], began["captured"]) == (0, 1)
