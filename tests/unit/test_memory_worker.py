import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import ForbiddenError, RateLimitedError
from engram_voice.memory import MemoryRuntime, MemorySettings, build_memory_runtime
from engram_voice.memory.queue import QueueUnavailableError
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.memory.sink import SinkMessage, SinkRejectedError, SinkUnavailableError
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink
from tests.support.polling import async_poll_until

KEYS = [("k1", Secret("k" * 64))]


def _settings(tmp: Path, **env: str) -> MemorySettings:
    reader = EnvReader(
        {
            "MEMORY_SQLITE_PATH": str(tmp / "queue.sqlite3"),
            "MEMORY_WORKER": "off",
            "MEMORY_RETRY_WAIT_INITIAL_SECONDS": "0",
            "MEMORY_RETRY_WAIT_MAX_SECONDS": "0",
            "MEMORY_BACKOFF_BASE_SECONDS": "10",
            "MEMORY_CIRCUIT_FAILURES": "100",
            **env,
        }
    )
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def _turns(*ids: str, text: str = "hello") -> list[EnrichMessage]:
    return [
        EnrichMessage(id=i, role="user" if n % 2 == 0 else "assistant", text=f"{text} {i}")
        for n, i in enumerate(ids)
    ]


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return a wall clock that moves only when a test says so."""
    return FakeClock()


@pytest.fixture(name="sink")
def fixture_sink() -> FakeSink:
    """Return an in-memory sink with Zep's uuid rule."""
    return FakeSink()


@pytest.fixture(name="make_runtime")
async def fixture_make_runtime(tmp_path, clock, sink) -> AsyncIterator[Callable[..., object]]:
    """Build started runtimes (worker driven by drain) and stop them afterwards."""
    started: list[MemoryRuntime] = []

    async def make(**env: str) -> MemoryRuntime:
        runtime = build_memory_runtime(
            _settings(tmp_path, **env), token_keys=KEYS, sink=sink, clock=clock
        )
        await runtime.start()
        started.append(runtime)
        return runtime

    yield make
    for runtime in started:
        await runtime.stop()


async def _accept(runtime: MemoryRuntime, session: str, messages, user: str = "alice"):
    claims = runtime.verify(runtime.grant(session, user, "elena")["token"])
    return await runtime.accept(claims, messages)


async def test_turns_arrive_in_order_in_batches_of_at_most_30(make_runtime, sink):
    """Seventy turns reach the sink in order, in calls of at most 30 messages."""
    runtime = await make_runtime()
    ids = [f"m{i:03d}" for i in range(70)]
    await _accept(runtime, "vs_1", _turns(*ids))
    report = await runtime.drain()
    assert report.delivered == 70
    assert sink.message_ids("vs_1") == ids
    assert sink.calls == 3
    assert sink.sessions["vs_1"] == ("alice", "elena")
    assert (await runtime.status())["queue"]["depth"] == 0


async def test_long_turns_are_split_in_order_at_the_sinks_content_limit(make_runtime, sink):
    """A turn over the sink's content limit becomes ordered, numbered parts of one turn."""
    sink.max_chars = 1000
    runtime = await make_runtime()
    text = " ".join(["word"] * 500)
    await _accept(runtime, "vs_1", [EnrichMessage(id="long", role="user", text=text)])
    await runtime.drain()
    stored = sink.messages["vs_1"]
    assert [m.key for m in stored] == [("long", p) for p in range(3)]
    assert all(m.parts == 3 and len(m.content) <= 1000 for m in stored)
    assert " ".join(m.content for m in stored) == text


async def test_a_down_sink_defers_delivery_until_it_returns(make_runtime, sink, clock):
    """While Zep is down turns stay queued; once it is back they arrive exactly once."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a", "b"))
    sink.failures = [FakeSink.down() for _ in range(3)]
    report = await runtime.drain()
    assert (report.delivered, report.deferred) == (0, 2)
    assert sink.calls == 3  # one attempt plus two inline retries
    status = await runtime.status()
    assert status["queue"]["depth"] == 2
    assert await runtime.drain() == type(report)()  # backing off: nothing is due yet
    clock.advance(11)
    assert (await runtime.drain()).delivered == 2
    assert sink.message_ids("vs_1") == ["a", "b"]


async def test_retry_after_is_honoured(make_runtime, sink, clock):
    """A 429 with Retry-After delays the next attempt by at least that long."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a"))
    sink.failures = [FakeSink.down(retry_after=120)]
    await runtime.drain()
    assert sink.calls == 1  # too long to wait inline: scheduled instead
    clock.advance(119)
    assert (await runtime.drain()).sessions == 0
    clock.advance(2)
    assert (await runtime.drain()).delivered == 1


async def test_the_circuit_opens_and_probes_after_its_cooldown(make_runtime, sink, clock):
    """After repeated failures the worker stops calling Zep, then probes once it may."""
    runtime = await make_runtime(
        MEMORY_CIRCUIT_FAILURES="2",
        MEMORY_CIRCUIT_COOLDOWN_SECONDS="30",
        MEMORY_WORKER_CONCURRENCY="1",
        MEMORY_RETRY_INLINE_ATTEMPTS="1",
    )
    for session in ("s1", "s2", "s3"):
        await _accept(runtime, session, _turns("a"))
    sink.failures = [FakeSink.down() for _ in range(10)]
    report = await runtime.drain()
    assert report.circuit_open
    assert sink.calls == 2
    assert (await runtime.status())["worker"]["circuit"] == "open"
    clock.advance(11)
    assert (await runtime.drain()).circuit_open
    assert sink.calls == 2  # nothing hammered while open
    sink.failures.clear()
    clock.advance(30)
    report = await runtime.drain()
    assert report.delivered == 3
    assert runtime.worker is not None
    assert runtime.worker.circuit.state == "closed"


async def test_a_rejected_batch_becomes_a_dead_letter_and_replays(make_runtime, sink, clock):
    """A permanent 400 moves the batch to dead letters with its reason; replay delivers it."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a", "b"))
    sink.failures = [SinkRejectedError("zep answered 422: content invalid", status=422)]
    report = await runtime.drain()
    assert report.dead_lettered == 2
    letters = await runtime.queue.dead_letters(limit=5, include_replayed=False)
    assert letters[0].reason == "zep answered 422: content invalid"
    assert (await runtime.status())["queue"]["dead_letters"] == 1
    assert await runtime.queue.replay(None, now=clock.now) == 2
    assert (await runtime.drain()).delivered == 2
    assert sink.message_ids("vs_1") == ["a", "b"]


async def test_already_delivered_messages_are_recognised_not_duplicated(make_runtime, sink):
    """After a crash between delivery and bookkeeping, the sink's dedupe is not a failure."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a", "b", "c"))
    sink.messages["vs_1"] = [
        SinkMessage(
            message_id=mid,
            part=0,
            parts=1,
            role="user",
            name="user",
            content=f"hello {mid}",
            at=None,
            accepted_at=0.0,
        )
        for mid in ("a", "b")
    ]
    report = await runtime.drain()
    assert (report.delivered, report.dead_lettered) == (3, 0)
    assert sink.message_ids("vs_1") == ["a", "b", "c"]


async def test_too_many_attempts_end_in_a_dead_letter(make_runtime, sink, clock):
    """A batch that keeps failing transiently is dead-lettered after the configured attempts."""
    runtime = await make_runtime(MEMORY_MAX_ATTEMPTS="2", MEMORY_RETRY_INLINE_ATTEMPTS="1")
    await _accept(runtime, "vs_1", _turns("a"))
    sink.failures = [FakeSink.down() for _ in range(5)]
    assert (await runtime.drain()).deferred == 1
    clock.advance(3600)
    assert (await runtime.drain()).dead_lettered == 1
    letters = await runtime.queue.dead_letters(limit=5, include_replayed=False)
    assert letters[0].reason.startswith("gave up after 2 attempts")


async def test_too_old_turns_end_in_a_dead_letter(make_runtime, sink, clock):
    """A batch older than the maximum age is dead-lettered at its next failure."""
    runtime = await make_runtime(MEMORY_MAX_AGE_SECONDS="60", MEMORY_RETRY_INLINE_ATTEMPTS="1")
    await _accept(runtime, "vs_1", _turns("a"))
    clock.advance(61)
    sink.failures = [FakeSink.down()]
    assert (await runtime.drain()).dead_lettered == 1


async def test_stopping_finishes_the_in_flight_batch_and_keeps_the_rest(make_runtime, sink):
    """A stop during delivery lets the current batch finish and leaves later ones queued."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns(*(f"m{i:02d}" for i in range(40))))
    sink.gate = asyncio.Event()
    assert runtime.worker is not None
    drain = asyncio.create_task(runtime.drain())
    async with asyncio.timeout(5):
        await sink.entered.wait()
    runtime.worker.request_stop()
    sink.gate.set()
    async with asyncio.timeout(5):
        report = await drain
    assert report.delivered == 30
    assert (await runtime.status())["queue"]["depth"] == 10


async def test_a_session_cannot_be_written_for_another_user(make_runtime):
    """Turns for a stored session under a different user are refused with 403."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a"))
    with pytest.raises(ForbiddenError):
        await _accept(runtime, "vs_1", _turns("b"), user="mallory")


async def test_posting_too_often_for_one_session_is_rate_limited(make_runtime):
    """More posts per minute than allowed for one session answer 429 with Retry-After."""
    runtime = await make_runtime(MEMORY_RATE_PER_MINUTE="2")
    await _accept(runtime, "vs_1", _turns("a"))
    await _accept(runtime, "vs_1", _turns("b"))
    with pytest.raises(RateLimitedError) as raised:
        await _accept(runtime, "vs_1", _turns("c"))
    assert raised.value.retry_after is not None


async def test_status_reports_the_memory_section_without_secrets(make_runtime, clock):
    """The status shows sink, depth, oldest age, dead letters, circuit and last delivery."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a"))
    clock.advance(5)
    status = await runtime.status()
    assert status["sink"] == {"kind": "fake"}
    assert status["queue"]["depth"] == 1
    assert status["queue"]["oldest_pending_age_seconds"] == 5.0
    assert status["worker"]["circuit"] == "closed"
    assert status["last_delivery_at"] is None
    await runtime.drain()
    assert (await runtime.status())["last_delivery_at"] is not None


async def test_a_failing_queue_pass_is_reported_and_the_worker_keeps_delivering(
    make_runtime, sink, monkeypatch
):
    """A queue error (e.g. the file locked) is logged and shown; the next pass delivers."""
    runtime = await make_runtime(MEMORY_WORKER="inprocess", MEMORY_POLL_SECONDS="0.05")
    real_claim = runtime.queue.claim
    failures = [QueueUnavailableError("database locked")]

    async def claim_failing_once(**kwargs):
        if failures:
            raise failures.pop()
        return await real_claim(**kwargs)

    monkeypatch.setattr(runtime.queue, "claim", claim_failing_once)
    await _accept(runtime, "vs_1", _turns("a"))
    # The worker runs in this loop; a bounded poll is how the test sees its progress.
    await async_poll_until(
        lambda: sink.message_ids("vs_1") == ["a"], timeout=10, interval=0.02, what="delivery"
    )
    status = await runtime.status()
    assert failures == []
    assert status["worker"]["running"] is True
    assert status["worker"]["last_error"] == "worker error: QueueUnavailableError"


async def test_a_refused_sink_key_is_not_retried_inline_and_the_turns_stay_queued(
    make_runtime, sink, clock
):
    """A 401 from the sink is deferred after one call (no inline retries), nothing is lost."""
    runtime = await make_runtime()
    await _accept(runtime, "vs_1", _turns("a"))
    sink.failures = [SinkUnavailableError("zep refused the API key (401)", status=401)]
    report = await runtime.drain()
    assert (report.delivered, report.deferred, report.dead_lettered) == (0, 1, 0)
    assert sink.calls == 1
    assert (await runtime.status())["worker"]["last_error"].startswith("zep refused the API key")
    clock.advance(11)
    assert (await runtime.drain()).delivered == 1


@pytest.mark.parametrize("quick_sessions", [1, 3, 7])
async def test_a_slow_session_does_not_hold_back_claiming_the_others(
    make_runtime, sink, quick_sessions
):
    """While one session's delivery hangs, the free slots keep claiming and delivering others."""
    runtime = await make_runtime(MEMORY_WORKER_CONCURRENCY="2")
    await _accept(runtime, "slow", _turns("a"))
    quick = [f"q{i}" for i in range(quick_sessions)]
    for session in quick:
        await _accept(runtime, session, _turns("a"))
    release = asyncio.Event()
    deliver = sink.deliver

    async def slow_for_one(session, messages, keepalive):
        if session.session_id == "slow":
            await release.wait()
        return await deliver(session, messages, keepalive)

    sink.deliver = slow_for_one  # type: ignore[method-assign]
    drain = asyncio.create_task(runtime.drain())
    try:
        await async_poll_until(
            lambda: all(sink.message_ids(s) == ["a"] for s in quick),
            timeout=10,
            interval=0.01,
            what="the quick sessions delivered while the slow one hangs",
        )
        assert sink.message_ids("slow") == []
    finally:
        release.set()
    async with asyncio.timeout(10):
        report = await drain
    assert (report.sessions, report.delivered) == (quick_sessions + 1, quick_sessions + 1)
