"""Opening a shared queue in the background: retried with backoff, reported, logged sparingly."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import cast

import pytest
from litestar.testing import TestClient
from structlog.testing import capture_logs

from engram_voice.envreader import EnvReader
from engram_voice.errors import StorageUnavailableError
from engram_voice.memory import MemoryClaims, MemoryRuntime, MemorySettings, TurnQueue
from engram_voice.memory.cli import create_worker_app
from engram_voice.memory.connect import StorageConnector
from engram_voice.memory.queue import QueueClosedError, QueueUnavailableError
from engram_voice.memory.ratelimit import SessionRateLimiter
from engram_voice.memory.schemas import EnrichMessage
from tests.support.clock import FakeClock
from tests.support.polling import async_poll_until
from tests.support.servers import free_port

FAST = {"wait_initial": 0.001, "wait_max": 0.002}


def _failing(
    times: int, calls: list[str], name: str, clock: FakeClock | None = None
) -> Callable[[], Awaitable[None]]:
    """Return an opener that fails ``times`` times with the same reason, then opens."""

    async def open_step() -> None:
        calls.append(name)
        if clock is not None:
            clock.advance(1.0)
        if calls.count(name) <= times:
            raise QueueUnavailableError("database unreachable")

    return open_step


@pytest.mark.parametrize(("first_fails", "second_fails"), [(0, 0), (3, 0), (0, 4), (2, 5)])
async def test_steps_open_in_order_and_an_opened_step_is_never_opened_again(
    first_fails, second_fails
):
    """Each step is retried until it opens, in order; a step that opened is not repeated."""
    calls: list[str] = []
    connector = StorageConnector(
        [
            ("queue", _failing(first_fails, calls, "queue")),
            ("sink_state", _failing(second_fails, calls, "sink_state")),
        ],
        **FAST,
    )
    await connector.run()
    assert connector.ready
    assert calls == ["queue"] * (first_fails + 1) + ["sink_state"] * (second_fails + 1)
    assert connector.attempts == first_fails + second_fails + 1
    assert connector.describe() == {"state": "connected", "attempts": connector.attempts}


@pytest.mark.parametrize("error", [RuntimeError("bug"), ValueError("bad"), KeyError("x")])
async def test_only_unavailable_storage_is_retried(error):
    """Anything but QueueUnavailableError (a bug, a bad value) ends the attempts, visibly."""
    attempts = 0

    async def open_step() -> None:
        nonlocal attempts
        attempts += 1
        raise error

    connector = StorageConnector([("queue", open_step)], **FAST)
    with capture_logs() as logs, pytest.raises(type(error)):
        await connector.run()
    assert (attempts, connector.ready) == (1, False)
    # and it says so: status and the log name the failure (its type only, never its text)
    described = connector.describe()
    assert described["state"] == "failed"
    assert described["last_error"] == f"gave up: {type(error).__name__}"
    aborted = [e for e in logs if e["event"] == "memory.queue_connect_aborted"]
    assert aborted == [
        {
            "event": "memory.queue_connect_aborted",
            "log_level": "error",
            "step": "queue",
            "error": type(error).__name__,
        }
    ]
    assert all(str(error.args[0]) not in str(e) for e in logs)


@pytest.mark.parametrize(
    ("failures", "log_every"), [(1, 60.0), (59, 60.0), (100, 60.0), (250, 7.0)]
)
async def test_a_long_outage_logs_one_line_per_interval_with_the_count_held_back(
    failures, log_every
):
    """The same failure is logged once per ``log_every`` seconds (one attempt per second here)."""
    clock = FakeClock(0.0)
    calls: list[str] = []
    connector = StorageConnector(
        [("queue", _failing(failures, calls, "queue", clock))],
        log_every=log_every,
        clock=clock,
        **FAST,
    )
    with capture_logs() as logs:
        await connector.run()
    failed = [e for e in logs if e["event"] == "memory.queue_connect_failed"]
    expected = len(range(0, failures, int(log_every)))
    assert len(failed) == expected
    assert [e["attempt"] for e in failed] == [1 + i * int(log_every) for i in range(expected)]
    assert sum(e["held_back"] for e in failed) == (expected - 1) * (int(log_every) - 1)
    assert all(e["reason"] == "database unreachable" for e in failed)
    assert [e["event"] for e in logs].count("memory.queue_connected") == 1


async def test_a_changed_reason_is_logged_at_once():
    """A different failure is news: it is logged even within the quiet interval."""
    reasons = iter(["database unreachable", "database unreachable", "database locked"])

    async def open_step() -> None:
        reason = next(reasons, None)
        if reason is not None:
            raise QueueUnavailableError(reason)

    connector = StorageConnector([("queue", open_step)], clock=FakeClock(), **FAST)
    with capture_logs() as logs:
        await connector.run()
    failed = [e["reason"] for e in logs if e["event"] == "memory.queue_connect_failed"]
    assert failed == ["database unreachable", "database locked"]


@pytest.mark.parametrize("wait_max", [0.5, 3.0, 30.0, 600.0])
async def test_retry_after_is_a_whole_second_within_the_backoff_bound(wait_max):
    """Retry-After offered to clients is at least 1 s and never beyond the longest wait."""
    clock = FakeClock(0.0)
    connector = StorageConnector(
        [("queue", _failing(10**6, [], "queue"))], wait_max=wait_max, clock=clock
    )
    assert connector.retry_after() == 1
    for attempt in range(1, 40):
        connector.attempts = attempt
        connector._failed("queue", "database unreachable")
        assert 1 <= connector.retry_after() <= max(1, int(wait_max + 0.999))


def _worker_settings(tmp: Path) -> MemorySettings:
    reader = EnvReader(
        {
            "MEMORY_QUEUE": "postgres",
            "MEMORY_POSTGRES_HOST": "127.0.0.1",
            "MEMORY_POSTGRES_PORT": str(free_port()),  # nothing listens there
            "MEMORY_POSTGRES_USER": "engram",
            "MEMORY_POSTGRES_PASSWORD": "never-accepted",
            "MEMORY_POSTGRES_SSLMODE": "disable",
            "MEMORY_POSTGRES_CONNECT_TIMEOUT_SECONDS": "1",
            "MEMORY_CONNECT_RETRY_MAX_SECONDS": "0.5",
            "MEMORY_SQLITE_PATH": str(tmp / "unused.sqlite3"),
            "ZEP_API": "v2",
            "ZEP_API_URL": "http://127.0.0.1:9",
            "ZEP_API_KEY": "never-sent",
        }
    )
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def test_a_worker_whose_database_is_down_starts_and_stays_alive_while_it_waits(tmp_path):
    """`engram-voice worker` starts without its database: /healthz 200 waiting, /status why."""
    with TestClient(create_worker_app(_worker_settings(tmp_path))) as client:
        health = client.get("/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "waiting for the queue"})
        memory = client.get("/status").json()["memory"]
        assert memory["queue"]["available"] is False
        assert memory["queue"]["connection"]["state"] == "connecting"
        assert memory["worker"]["waiting_for_queue"] is True
        assert "never-accepted" not in client.get("/status").text


class _UnreachableQueue:
    """A shared queue whose database never answers: open() fails or hangs."""

    backend = "postgres"

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.opens = 0
        self.closed = False

    async def open(self) -> None:
        """Fail like an unreachable server, or hang until cancelled."""
        self.opens += 1
        if self.mode == "hangs":
            await asyncio.Event().wait()
        raise QueueUnavailableError("database unreachable")

    async def close(self) -> None:
        """Record the close."""
        self.closed = True


@pytest.mark.parametrize("mode", ["fails", "hangs"])
async def test_a_runtime_waiting_for_its_queue_refuses_enrich_with_retry_after_and_stops(mode):
    """While connecting: enrich is 503 with Retry-After, nothing enqueued; stop() ends it."""
    queue = _UnreachableQueue(mode)
    runtime = MemoryRuntime(
        queue=cast("TurnQueue", queue),
        sink=None,
        worker=None,
        signer=None,
        rate_limiter=SessionRateLimiter(100),
        run_worker=False,
        open_in_background=True,
        connect_wait_max=0.05,
    )
    await runtime.start()
    await async_poll_until(lambda: queue.opens >= 2 or mode == "hangs", what="a retry")
    claims = MemoryClaims(
        session_id="vs_a", user_id="alice", agent="elena", expires_at=0, key_id="k1"
    )
    message = EnrichMessage(id="m1", role="user", text="hello")
    with pytest.raises(StorageUnavailableError) as refused:
        await runtime.accept(claims, [message])
    assert refused.value.retry_after is not None
    assert refused.value.retry_after >= 1
    status = await runtime.status()
    assert status["queue"]["available"] is False
    assert status["queue"]["connection"]["state"] == "connecting"
    assert (await runtime.readiness())["available"] is False
    await asyncio.wait_for(runtime.stop(grace_seconds=1), timeout=10)
    assert queue.closed


@pytest.mark.parametrize("argv", [["list"], ["list", "--json"], ["replay"], ["replay", "3"]])
def test_the_dead_letters_command_says_the_queue_is_unavailable_without_a_traceback(
    tmp_path, capsys, argv
):
    """With PostgreSQL down, `memory dead-letters` exits 1 with the reason, no secret."""
    from engram_voice.memory.cli import dead_letters_main  # noqa: PLC0415

    env = {
        "MEMORY_QUEUE": "postgres",
        "MEMORY_POSTGRES_HOST": "127.0.0.1",
        "MEMORY_POSTGRES_PORT": str(free_port()),
        "MEMORY_POSTGRES_USER": "engram",
        "MEMORY_POSTGRES_PASSWORD": "never-accepted",
        "MEMORY_POSTGRES_SSLMODE": "disable",
        "MEMORY_POSTGRES_CONNECT_TIMEOUT_SECONDS": "1",
        "MEMORY_SQLITE_PATH": str(tmp_path / "unused.sqlite3"),
        "LOG_LEVEL": "error",
    }
    assert dead_letters_main(argv, env) == 1
    captured = capsys.readouterr()
    assert "the memory queue (postgres) is unavailable: no database connection in time" in (
        captured.err
    )
    assert "Traceback" not in captured.err
    assert "never-accepted" not in captured.err + captured.out


class _NotOpenQueue(_UnreachableQueue):
    """An unreachable queue whose reads fail as a PostgreSQL queue's do before it opens."""

    async def capture_state(self, *args: object) -> None:  # noqa: ARG002
        """Fail: the pool does not exist yet."""
        raise QueueClosedError()


@pytest.mark.parametrize("mode", ["fails", "hangs"])
@pytest.mark.parametrize("known", [False, True], ids=["first-post", "cached-session"])
async def test_a_browser_post_while_connecting_says_why_and_when_to_retry(mode, known):
    """Enrich while storage connects: 503 naming the reason, Retry-After the next attempt."""
    queue = _NotOpenQueue(mode)
    runtime = MemoryRuntime(
        queue=cast("TurnQueue", queue),
        sink=None,
        worker=None,
        signer=None,
        rate_limiter=SessionRateLimiter(100),
        run_worker=False,
        open_in_background=True,
        connect_wait_max=20.0,
    )
    await runtime.start()
    try:
        if mode == "fails":
            await async_poll_until(lambda: queue.opens >= 1, what="a failed attempt")
            await async_poll_until(
                lambda: runtime.connector.last_error is not None, what="the reason"
            )
        if known:
            runtime.captured._remember_browser("vs_a")  # a session seen before
        claims = MemoryClaims(
            session_id="vs_a", user_id="alice", agent="elena", expires_at=0, key_id="k1"
        )
        with pytest.raises(StorageUnavailableError) as refused:
            await runtime.accept_browser(claims, [EnrichMessage(id="m1", role="user", text="hi")])
        expected = runtime.connector.retry_after()
        assert refused.value.retry_after == expected
        assert "not connected yet" in refused.value.detail
        if mode == "fails":
            assert "database unreachable" in refused.value.detail
    finally:
        await asyncio.wait_for(runtime.stop(grace_seconds=1), timeout=10)
