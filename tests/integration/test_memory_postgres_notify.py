"""A worker in another process learns of new turns by LISTEN/NOTIFY, not by polling.

The worker polls only every 60 s (``MEMORY_POLL_SECONDS``, its maximum), and every turn
must be delivered within 20 s of its commit: only the notification can explain that. Its
listening connection is then killed on the server, and the worker must listen again and
be woken as before.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.queue import EnqueueBatch
from tests.support.polling import async_poll_until, poll_until
from tests.support.postgres import PostgresServer
from tests.support.servers import ServiceProcess

ZEP_KEY = "zep-standin-key-notify-0123456789"
WAKE_BOUND = 20.0
"""Well below the 60 s poll interval: a delivery within it was woken by a notification."""


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ServiceProcess]:
    """Run the Zep stand-in as its own process."""
    zep = ServiceProcess(
        ["zep-standin"],
        {"ZEP_STANDIN_API_KEY": ZEP_KEY, "ZEP_STANDIN_DB": str(tmp_path / "zep.sqlite3")},
        log_path=tmp_path / "zep.log",
    ).start()
    yield zep
    zep.stop()


def _delivered(server: PostgresServer, database: str) -> int:
    with psycopg.connect(server.conninfo(database)) as conn:
        row = conn.execute("SELECT count(*) FROM memory_turns WHERE state = 1").fetchone()
    return int(row[0]) if row else 0


def _listener_pids(server: PostgresServer, database: str) -> set[int]:
    with psycopg.connect(server.conninfo(database)) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s "
            "AND application_name = 'engram-voice-listen'",
            (database,),
        ).fetchall()
    return {int(r[0]) for r in rows}


def _listening(worker: ServiceProcess) -> bool:
    status = httpx.get(f"{worker.base_url}/status", timeout=5).json()
    notify = status["memory"]["worker"].get("notify") or {}
    return bool(notify.get("listening"))


@pytest.mark.parametrize("turns_per_round", [1, 7])
async def test_a_worker_in_another_process_is_woken_by_new_turns_before_its_poll(
    postgres_server: PostgresServer, zep: ServiceProcess, tmp_path: Path, turns_per_round: int
) -> None:
    """Each commit wakes the other process's worker at once, also after its LISTEN was lost."""
    database = postgres_server.new_database("notify")
    env = postgres_server.env(
        database,
        ZEP_API_URL=zep.base_url,
        ZEP_API_KEY=ZEP_KEY,
        MEMORY_POLL_SECONDS="60",
        MEMORY_SQLITE_PATH=str(tmp_path / "worker.sqlite3"),
        LOG_FORMAT="json",
    )
    worker = ServiceProcess(["worker"], env, log_path=tmp_path / "worker.log").start()
    queue = PostgresTurnQueue(postgres_server.conninfo(database), pool_size=2)
    await queue.open()
    sent = 0

    async def round_trip(name: str) -> None:
        nonlocal sent
        turns = [(f"{name}-{i}", "user", f"{name} turn {i}", None) for i in range(turns_per_round)]
        await queue.enqueue(
            EnqueueBatch(session_id=f"vs_{name}", user_id="alice", agent="elena", turns=turns)
        )
        sent += turns_per_round
        await async_poll_until(
            lambda: _delivered(postgres_server, database) == sent,
            timeout=WAKE_BOUND,
            interval=0.1,
            what=f"{name} delivered without waiting for the poll",
        )

    try:
        await asyncio.to_thread(poll_until, lambda: _listening(worker), timeout=30, what="LISTEN")
        for n in range(3):
            await round_trip(f"r{n}")
        (old,) = _listener_pids(postgres_server, database)
        with psycopg.connect(postgres_server.conninfo(database), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (old,))
        await asyncio.to_thread(
            poll_until,
            lambda: _listener_pids(postgres_server, database) - {old} and _listening(worker),
            timeout=30,
            what="the worker listening again",
        )
        for n in range(2):
            await round_trip(f"after{n}")
    finally:
        await queue.close()
        worker.stop()
    assert '"memory.queue_listen_lost"' in worker.read_log()


async def _received(conn: psycopg.AsyncConnection, expected: int) -> int:
    """Return the notifications that arrive: ``expected`` of them, then any extra within 0.5 s."""
    got = 0
    if expected:
        async for _ in conn.notifies(timeout=WAKE_BOUND, stop_after=expected):
            got += 1
    async for _ in conn.notifies(timeout=0.5):
        got += 1
    return got


@pytest.mark.parametrize("requests", [1, 10, 200])
async def test_commits_that_store_turns_notify_at_most_once_each_and_duplicates_not_at_all(
    postgres_server: PostgresServer, requests: int
) -> None:
    """Commits of new turns are followed by a notification (coalesced); duplicates by none."""
    from engram_voice.memory.postgres_notify import CHANNEL  # noqa: PLC0415

    conninfo = postgres_server.conninfo(postgres_server.new_database("notifycount"))
    queue = PostgresTurnQueue(conninfo, pool_size=4)
    await queue.open()
    listener = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        await listener.execute(f"LISTEN {CHANNEL}")
        batches = [
            EnqueueBatch(
                session_id=f"vs_{i % 7}",
                user_id="alice",
                agent="elena",
                turns=[(f"m{i}", "user", f"turn {i}", None)],
            )
            for i in range(requests)
        ]
        await asyncio.gather(*(queue.enqueue(b) for b in batches))
        commits = queue.commits
        assert 1 <= commits <= requests
        assert 1 <= await _received(listener, 1) <= commits
        await asyncio.gather(*(queue.enqueue(b) for b in batches))  # all duplicates
        assert queue.commits > commits
        assert await _received(listener, 0) == 0
    finally:
        await listener.close()
        await queue.close()
