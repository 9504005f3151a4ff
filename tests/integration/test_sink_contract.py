"""One contract for every memory sink, run against each through its real SDK and the stand-in.

Parametrised over the Zep v4 sink (``zep-cloud`` 4.x against the stand-in's ``/api/v4``)
and the Zep v2 sink (``zep-python`` against ``/api/v2``), and the v4 sink once more with
the queue and its sink state in PostgreSQL (``v4+postgres``). The runtime is the real one
(its queue, worker driven by ``drain()``, sink built by ``build_sink``) on a fake
clock; the stand-in injects the faults. Every test reads back what Zep holds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from zep_python.base_client import AsyncBaseClient
from zep_python.core.api_error import ApiError as V2ApiError

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.memory import MemoryRuntime, MemorySettings, build_memory_runtime
from engram_voice.memory.schemas import EnrichMessage
from tests.support.clock import FakeClock
from tests.support.polling import async_poll_until
from tests.support.postgres import PostgresServer
from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin

KEYS = [("k1", Secret("c" * 64))]
SINKS = ["v4", "v2", pytest.param("v4+postgres", marks=pytest.mark.process)]
"""The sinks; ``v4+postgres`` is the v4 sink with the queue and its state in PostgreSQL."""
_ADD_CALLS = {"v4": "v4.messages.add", "v2": "memory.add"}

Stored = list[tuple[str, str]]
"""(turn id, content) of each stored message, in order."""


@dataclass
class Zep:
    """The stand-in seen from one sink's side: faults, call counts, what it stores."""

    api: str
    standin: ZepV4StandIn
    queue: str = "sqlite"

    def fault(self, **plan: Any) -> None:
        """Inject a fault plan (or ``clear=True``)."""
        self.standin.fault(**plan)

    def add_calls(self) -> int:
        """Return how many message writes reached the stand-in (faulted ones included)."""
        calls: dict[str, int] = self.standin.state()["calls"]
        return calls.get(_ADD_CALLS[self.api], 0)

    async def stored(self, session_id: str, user_id: str = "alice") -> Stored:
        """Return what Zep holds for our session, in order (via the sink's own SDK)."""
        if self.api == "v2":
            return await self._stored_v2(session_id)
        return await self._stored_v4(session_id, user_id)

    async def _stored_v2(self, session_id: str) -> Stored:
        client = AsyncBaseClient(
            base_url=f"{self.standin.base_url}/api/v2", api_key=self.standin.api_key, timeout=5
        )
        try:
            memory = await client.memory.get(session_id, lastn=1000)
        except V2ApiError as exc:
            if exc.status_code == 404:
                return []
            raise
        return [
            (str((m.metadata or {})["message_id"]), m.content or "") for m in memory.messages or []
        ]

    async def _stored_v4(self, session_id: str, user_id: str) -> Stored:
        client = self.standin.client()
        try:
            user = await client.user.lookup(user_id=user_id)
        except Exception:  # noqa: BLE001 - no such user yet: nothing stored
            return []
        stored: Stored = []
        threads = await client.thread.list(user_uuid=str(user.uuid_), page_size=1000)
        for thread in threads.items or []:
            pager = await client.thread.list_messages(str(thread.uuid_), page_size=1000)
            async for m in pager:
                if m.metadata and m.metadata.get("session_id") == session_id:
                    stored.append((str(m.metadata["message_id"]), m.content or ""))
        return stored


@pytest.fixture(name="standin")
def fixture_standin(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the Zep stand-in (both API subsets) on loopback."""
    with zep_v4_standin(tmp_path) as standin:
        yield standin


@pytest.fixture(name="zep", params=SINKS)
def fixture_zep(request: pytest.FixtureRequest, standin: ZepV4StandIn) -> Zep:
    """Return the stand-in as seen by the sink under test (``ZEP_API`` v4 or v2)."""
    api, _, queue = str(request.param).partition("+")
    return Zep(api=api, standin=standin, queue=queue or "sqlite")


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return a wall clock that moves only when the test moves it."""
    return FakeClock()


MakeRuntime = Callable[..., Awaitable[MemoryRuntime]]


@pytest.fixture(name="make_runtime")
async def fixture_make_runtime(
    request: pytest.FixtureRequest, tmp_path: Path, zep: Zep, clock: FakeClock
) -> AsyncIterator[MakeRuntime]:
    """Build started runtimes on one queue (file or database) with the sink; stop them after."""
    started: list[MemoryRuntime] = []
    queue_env: dict[str, str] = {}
    if zep.queue == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        queue_env = server.env(server.new_database("sinks"))

    async def make(**env: str) -> MemoryRuntime:
        reader = EnvReader(
            {
                "MEMORY_SQLITE_PATH": str(tmp_path / "queue.sqlite3"),
                "MEMORY_WORKER": "off",
                "MEMORY_RETRY_WAIT_INITIAL_SECONDS": "0",
                "MEMORY_RETRY_WAIT_MAX_SECONDS": "0",
                "MEMORY_BACKOFF_BASE_SECONDS": "10",
                "MEMORY_CIRCUIT_FAILURES": "100",
                "ZEP_API": zep.api,
                "ZEP_API_URL": zep.standin.base_url,
                "ZEP_API_KEY": zep.standin.api_key,
                "ZEP_TIMEOUT_SECONDS": "5",
                **queue_env,
                **env,
            }
        )
        settings = MemorySettings.from_env(reader)
        reader.raise_if_invalid()
        runtime = build_memory_runtime(settings, token_keys=KEYS, clock=clock)
        await runtime.start()
        started.append(runtime)
        # A shared queue opens in the background (calls must not wait for it): wait for it.
        async with asyncio.timeout(30):
            await runtime.connector.ready_event.wait()
        return runtime

    yield make
    for runtime in started:
        await runtime.stop(grace_seconds=5)


def _turns(*ids: str, text: str = "turn") -> list[EnrichMessage]:
    return [
        EnrichMessage(id=i, role="user" if n % 2 == 0 else "assistant", text=f"{text} {i}")
        for n, i in enumerate(ids)
    ]


def _expected(*ids: str, text: str = "turn") -> Stored:
    return [(i, f"{text} {i}") for i in ids]


async def _accept(
    runtime: MemoryRuntime, session: str, messages: list[EnrichMessage], user: str = "alice"
) -> None:
    claims = runtime.verify(runtime.grant(session, user, "elena")["token"])
    await runtime.accept(claims, messages)


async def test_turns_arrive_in_order_in_calls_of_at_most_30(make_runtime, zep):
    """Seventy turns reach Zep in order, each once, in three calls of at most 30 messages."""
    runtime = await make_runtime()
    ids = [f"m{i:03d}" for i in range(70)]
    await _accept(runtime, "vs_1", _turns(*ids))
    report = await runtime.drain()
    assert (report.delivered, report.dead_lettered) == (70, 0)
    assert await zep.stored("vs_1") == _expected(*ids)
    assert zep.add_calls() == 3


@pytest.mark.parametrize("length", [999, 1000, 1001, 2999, 4097, 9999])
async def test_long_turns_are_split_in_order_at_the_content_limit(make_runtime, zep, length):
    """A turn over the content limit is stored as ordered parts within it, nothing lost."""
    runtime = await make_runtime(ZEP_MAX_MESSAGE_CHARS="1000")
    words = ("lisbon", "museum", "tram", "x" * 37, "pastel")
    text = " ".join(words[i % len(words)] for i in range(length))[:length].strip()
    await _accept(
        runtime,
        "vs_1",
        [
            EnrichMessage(id="before", role="user", text="short one"),
            EnrichMessage(id="long", role="assistant", text=text),
            EnrichMessage(id="after", role="user", text="short two"),
        ],
    )
    assert (await runtime.drain()).delivered == 3
    stored = await zep.stored("vs_1")
    assert stored[0] == ("before", "short one")
    assert stored[-1] == ("after", "short two")
    parts = [content for mid, content in stored[1:-1]]
    assert {mid for mid, _ in stored[1:-1]} == {"long"}
    assert all(len(part) <= 1000 for part in parts)
    assert (len(parts) > 1) == (len(text) > 1000)
    assert " ".join(parts).split() == text.split()


async def test_exactly_once_across_a_crash_while_zep_stored_the_batch(make_runtime, zep, clock):
    """A process that dies mid-call after Zep stored the batch: a restart stores nothing twice.

    More turns arrive before the restart, so the next claim packs a different batch.
    """
    first = await make_runtime()
    await _accept(first, "vs_1", _turns("a", "b", "c"))
    zep.fault(mode="store_then_timeout", hold_ms=60_000)
    drain = asyncio.create_task(first.drain())
    await async_poll_until(
        lambda: zep.standin.state()["faults"]["injected"] >= 1,
        timeout=10,
        what="Zep storing the batch and holding its answer",
    )
    drain.cancel()  # the process dies mid-call: no bookkeeping after the send
    await asyncio.gather(drain, return_exceptions=True)
    zep.fault(clear=True)
    await first.stop(grace_seconds=1)
    second = await make_runtime()
    await _accept(second, "vs_1", _turns("d", "e"), user="alice")
    clock.advance(3600)
    report = await second.drain()
    assert report.dead_lettered == 0
    assert await zep.stored("vs_1") == [*_expected("a", "b", "c"), *_expected("d", "e")]


@pytest.mark.parametrize("mode", ["store_then_timeout", "store_then_fail"])
async def test_exactly_once_when_zep_stored_the_batch_but_the_answer_was_lost(
    make_runtime, zep, clock, mode
):
    """A timeout or a 5xx after Zep stored the batch, then a retry with more turns: once each."""
    runtime = await make_runtime(ZEP_TIMEOUT_SECONDS="0.5", MEMORY_RETRY_INLINE_ATTEMPTS="1")
    await _accept(runtime, "vs_1", _turns("a", "b"))
    zep.fault(mode=mode, hold_ms=5_000, count=1)
    report = await runtime.drain()
    assert (report.delivered, report.deferred) == (0, 2)
    await _accept(runtime, "vs_1", _turns("c", "d", text="later"))
    clock.advance(3600)
    assert (await runtime.drain()).delivered == 4
    assert await zep.stored("vs_1") == [*_expected("a", "b"), *_expected("c", "d", text="later")]


@pytest.mark.parametrize(("seconds", "millis"), [(120, None), (1, 120_000)])
async def test_429_waits_at_least_what_retry_after_asks(make_runtime, zep, clock, seconds, millis):
    """A 429 schedules the next attempt no earlier than Retry-After (retry-after-ms first)."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a"))
    zep.fault(mode="throttle", retry_after=seconds, retry_after_ms=millis, count=1)
    report = await runtime.drain()
    assert (report.delivered, report.deferred) == (0, 1)
    clock.advance(119)
    assert (await runtime.drain()).sessions == 0
    clock.advance(2)
    assert (await runtime.drain()).delivered == 1
    assert await zep.stored("vs_1") == _expected("a")


async def test_server_errors_are_retried_and_delivered_once(make_runtime, zep):
    """A 500 then a 503 are retried inline; the batch is stored once."""
    runtime = await make_runtime(MEMORY_RETRY_INLINE_ATTEMPTS="4")
    await _accept(runtime, "vs_1", _turns("a", "b"))
    zep.fault(mode="error", count=1)
    assert (await runtime.drain()).delivered == 2
    assert await zep.stored("vs_1") == _expected("a", "b")


async def test_a_permanent_rejection_is_a_dead_letter_with_a_short_reason(make_runtime, zep):
    """Zep's 400 moves the batch to dead letters (short reason, no key); replay delivers once."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a", "b"))
    zep.fault(mode="reject")
    report = await runtime.drain()
    assert report.dead_lettered == 2
    letters = await runtime.queue.dead_letters(limit=5, include_replayed=False)
    reason = letters[0].reason
    assert "400" in reason
    assert len(reason) <= 300
    assert zep.standin.api_key not in reason
    zep.fault(clear=True)
    assert await runtime.queue.replay(None, now=1.0) == 2
    assert (await runtime.drain()).delivered == 2
    assert await zep.stored("vs_1") == _expected("a", "b")


async def test_sessions_of_two_users_stay_apart(make_runtime, zep):
    """Each session's turns land in its own user's memory only."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_a", _turns("a1", "a2"), user="alice")
    await _accept(runtime, "vs_b", _turns("b1"), user="bob")
    assert (await runtime.drain()).delivered == 3
    assert await zep.stored("vs_a", "alice") == _expected("a1", "a2")
    assert await zep.stored("vs_b", "bob") == _expected("b1")
    if zep.api == "v4":
        assert await zep.stored("vs_b", "alice") == []
