"""The captured-session policy: for a session the server hears, the browser adds nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engram_voice.memory import MemoryRuntime, build_memory_runtime
from engram_voice.memory.captured import CapturedSessions
from engram_voice.memory.schemas import EnrichMessage
from tests.support.memory import FakeSink
from tests.unit.test_memory_worker import KEYS, _settings


def turns(*ids: str, text: str = "said") -> list[EnrichMessage]:
    """Return user turns with ``ids``."""
    return [EnrichMessage(id=i, role="user", text=f"{text} {i}") for i in ids]


@pytest.fixture(name="sink")
def fixture_sink() -> FakeSink:
    """Return an in-memory sink."""
    return FakeSink()


@pytest.fixture(name="runtime")
async def fixture_runtime(tmp_path: Path, sink: FakeSink) -> AsyncIterator[MemoryRuntime]:
    """Yield a started runtime whose worker is driven by drain()."""
    runtime = build_memory_runtime(_settings(tmp_path), token_keys=KEYS, sink=sink)
    await runtime.start()
    yield runtime
    await runtime.stop()


@pytest.mark.parametrize(
    ("posted", "heard", "not_heard"),
    [
        (["item_1"], 1, 0),
        (["item_x"], 0, 1),
        (["item_1", "item_2", "item_x", "item_y"], 2, 2),
    ],
)
async def test_a_captured_session_stores_only_what_the_server_heard(
    runtime: MemoryRuntime, sink: FakeSink, posted: list[str], heard: int, not_heard: int
) -> None:
    """Browser posts for a captured session store nothing; forged or altered turns never land."""
    runtime.mark_captured("vs_1", captured=True)
    await runtime.accept_captured("vs_1", "alice", "elena", turns("item_1", "item_2"))
    claims = runtime.verify(runtime.grant("vs_1", "alice", "elena")["token"])

    result, ignored = await runtime.accept_browser(claims, turns(*posted, text="forged"))
    await runtime.drain()

    assert (result.accepted, result.duplicates, ignored) == (0, heard, not_heard)
    assert sink.message_ids("vs_1") == ["item_1", "item_2"]
    assert all(text.startswith("said") for text in sink.texts("vs_1"))


async def test_a_session_that_fell_back_takes_the_browsers_turns(
    runtime: MemoryRuntime, sink: FakeSink
) -> None:
    """Once the sideband is lost, the browser's posts are stored (deduplicated by the key)."""
    runtime.mark_captured("vs_1", captured=True)
    await runtime.accept_captured("vs_1", "alice", "elena", turns("item_1"))
    runtime.mark_captured("vs_1", captured=False)
    claims = runtime.verify(runtime.grant("vs_1", "alice", "elena")["token"])

    result, ignored = await runtime.accept_browser(claims, turns("item_1", "item_2"))
    await runtime.drain()

    assert (result.accepted, result.duplicates, ignored) == (1, 1, 0)
    assert sink.message_ids("vs_1") == ["item_1", "item_2"]
    assert (await runtime.status())["captured_sessions"]["fell_back_to_browser"] == 1


def test_the_record_of_captured_sessions_is_bounded() -> None:
    """Beyond its size the least recently marked sessions are forgotten."""
    captured = CapturedSessions(max_sessions=3)
    for n in range(5):
        captured.mark(f"vs_{n}", captured=True)
    assert [captured.is_captured(f"vs_{n}") for n in range(5)] == [False, False, True, True, True]
    assert captured.describe()["remembered"] == 3
