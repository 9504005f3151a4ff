"""Worker replicas on one queue: two `engram-voice worker` processes, one stopped with SIGTERM."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engram_voice.memory.queue import EnqueueBatch
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from tests.support.polling import poll_until
from tests.support.servers import ServiceProcess

ZEP_KEY = "zep-standin-key-workers-0123456789"
SESSIONS = 12
TURNS = 60


@pytest.fixture(name="stack")
def fixture_stack(tmp_path: Path) -> Iterator[dict[str, ServiceProcess]]:
    """Start the Zep stand-in (150 ms a call); return it with two unstarted workers on one file."""
    zep = ServiceProcess(
        ["zep-standin"],
        {
            "ZEP_STANDIN_API_KEY": ZEP_KEY,
            "ZEP_STANDIN_DB": str(tmp_path / "zep.sqlite3"),
            "ZEP_STANDIN_LATENCY_MS": "150",
        },
        log_path=tmp_path / "zep.log",
    ).start()
    env = {
        "MEMORY_SQLITE_PATH": str(tmp_path / "queue.sqlite3"),
        "ZEP_API_URL": zep.base_url,
        "ZEP_API_KEY": ZEP_KEY,
        "MEMORY_WORKER_CONCURRENCY": "3",
        "MEMORY_CLAIM_TURNS": "30",
        "MEMORY_POLL_SECONDS": "0.1",
        "LOG_FORMAT": "json",
    }
    workers = {
        name: ServiceProcess(["worker"], env, log_path=tmp_path / f"{name}.log")
        for name in ("a", "b")
    }
    yield {"zep": zep, **workers}
    for process in (*workers.values(), zep):
        process.stop()


async def _fill(path: Path) -> None:
    queue = SqliteTurnQueue(path)
    await queue.open()
    try:
        for s in range(SESSIONS):
            turns = [(f"m{i:03d}", "user", f"vs_w{s} turn {i}", None) for i in range(TURNS)]
            await queue.enqueue(
                EnqueueBatch(session_id=f"vs_w{s}", user_id="alice", agent="elena", turns=turns)
            )
    finally:
        await queue.close()


def _rows(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(path, timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def _delivered(worker: ServiceProcess) -> float:
    text = httpx.get(f"{worker.base_url}/metrics", timeout=5).text
    line = next(
        ln for ln in text.splitlines() if ln.startswith("engram_memory_turns_delivered_total ")
    )
    return float(line.split()[1])


def test_two_workers_share_the_queue_and_sigterm_gives_leases_back(stack, tmp_path):
    """Both replicas deliver; SIGTERM lets one finish and release its leases; the other ends it."""
    path = tmp_path / "queue.sqlite3"
    # Both are up before there is work: neither can finish it all before the other starts
    # (each holds at most MEMORY_WORKER_CONCURRENCY sessions, and polls every 0.1 s).
    a, b = stack["a"].start(), stack["b"].start()
    asyncio.run(_fill(path))
    poll_until(lambda: _delivered(a) > 0 and _delivered(b) > 0, timeout=30, what="both delivering")
    assert a.process is not None
    pid = a.process.pid
    assert a.stop(timeout=30) in (0, -15)  # uvicorn re-raises SIGTERM after a graceful stop
    log = a.read_log()
    assert "memory.stopped" in log
    assert "memory.stop_timeout" not in log
    leased = "SELECT session_id FROM sessions WHERE lease_owner LIKE ?"
    assert _rows(path, leased, (f"%:{pid}:%",)) == []  # every lease it held was given back
    poll_until(
        lambda: _rows(path, "SELECT COUNT(*) FROM turns WHERE state = 0") == [(0,)],
        timeout=60,
        what="the remaining worker delivering everything",
    )
    assert _rows(path, "SELECT COUNT(*), MIN(state), MAX(state) FROM turns") == [
        (SESSIONS * TURNS, 1, 1)
    ]
    assert _delivered(b) < SESSIONS * TURNS  # the first worker really delivered a share
