"""The service with its PostgreSQL queue down: it starts, sets up calls, and memory catches up.

Each test runs a PostgreSQL server of its own, created first (so its password is known)
and then stopped: the service starts while nothing listens on the queue's port, and the
test starts the server again on that port (and stops and restarts it) while it watches
what the service answers. Every wait is a bounded poll; nothing depends on timing luck.
"""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from engram_voice.devpostgres import postgres_bin, start_local_postgres
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.queue import EnqueueBatch
from engram_voice.services import Overrides
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.memory import FakeSink
from tests.support.polling import poll_until
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.servers import ServiceProcess


@pytest.fixture(name="stopped_postgres")
def fixture_stopped_postgres() -> Iterator[PostgresServer]:
    """Create a server with a database ``queue`` and stop it (restart: ``_restart``)."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = start_postgres(fsync=False)
    server.new_database("unused")  # proves it answers before it is stopped
    server.stop(remove=False)
    try:
        yield server
    finally:
        server.stop()


def _restart(server: PostgresServer) -> None:
    """Start the stopped server again on its port, with the database ``queue``."""
    again = start_local_postgres(server.root, fsync=False, database="queue", port=server.port)
    server.process = again.process


def _env(emulator: Emulator, server: PostgresServer) -> dict[str, str]:
    return service_env(
        emulator,
        **server.env(
            "queue",
            MEMORY_CONNECT_RETRY_MAX_SECONDS="0.5",
            MEMORY_POSTGRES_CONNECT_TIMEOUT_SECONDS="1",
            MEMORY_STORE_TIMEOUT_SECONDS="1",
            MEMORY_POLL_SECONDS="0.1",
        ),
    )


def _mint(http: httpx.Client) -> dict[str, Any]:
    """Mint a call (an ephemeral key) and return its memory grant with the session id."""
    minted = http.post("/realtime/sessions", json={"agent": "elena"})
    assert minted.status_code == 201, minted.text
    body: dict[str, Any] = minted.json()
    assert body["client_secret"]["value"].startswith("ek_")
    return {"session_id": body["session_id"], "token": body["memory"]["token"]}


def _enrich(http: httpx.Client, grant: dict[str, Any], message_id: str) -> httpx.Response:
    return http.post(
        "/memory/enrich",
        json={
            "session_id": grant["session_id"],
            "messages": [{"id": message_id, "role": "user", "text": f"turn {message_id}"}],
        },
        headers={"Authorization": f"Bearer {grant['token']}"},
    )


def _assert_unavailable(answer: httpx.Response, password: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["code"] == "storage_unavailable"
    assert 1 <= int(answer.headers["retry-after"]) <= 30
    assert password not in answer.text


def test_a_service_started_without_its_database_sets_up_calls_and_stores_once_it_is_up(
    emulator: Emulator, stopped_postgres: PostgresServer, make_service: ServiceFactory
) -> None:
    """Down at start: calls mint, enrich is 503 and status says why; up: 202 and delivered."""
    sink = FakeSink()
    password = stopped_postgres.password
    with (
        make_service(_env(emulator, stopped_postgres), Overrides(memory_sink=sink)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        grants = [_mint(http) for _ in range(3)]
        for n, grant in enumerate(grants):
            _assert_unavailable(_enrich(http, grant, f"m{n}"), password)
        status = poll_until(
            lambda: (
                (answer := http.get("/status")).json()["memory"]["queue"]["connection"][
                    "last_error"
                ]
                and answer
            ),
            what="a failed connection attempt on /status",
        )
        queue = status.json()["memory"]["queue"]
        assert (queue["available"], queue["connection"]["state"]) == (False, "connecting")
        assert queue["connection"]["last_error"] == "no database connection in time"
        assert password not in status.text
        ready = http.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["memory"]["available"] is False
        assert password not in ready.text

        _restart(stopped_postgres)
        poll_until(
            lambda: _enrich(http, grants[0], "m0").status_code == 202,
            timeout=30,
            interval=0.1,
            what="enrich accepted once PostgreSQL is up",
        )
        for n, grant in enumerate(grants[1:], start=1):
            assert _enrich(http, grant, f"m{n}").status_code == 202
        poll_until(
            lambda: all(
                sink.texts(g["session_id"]) == [f"turn m{n}"] for n, g in enumerate(grants)
            ),
            timeout=30,
            what="every turn delivered",
        )
        assert http.get("/readyz").json()["memory"] == {"available": True}
        assert http.get("/status").json()["memory"]["queue"]["connection"]["state"] == "connected"


def test_a_database_that_stops_and_returns_costs_503s_only_while_it_is_down(
    emulator: Emulator, stopped_postgres: PostgresServer, make_service: ServiceFactory
) -> None:
    """Stopped under a running service: calls still mint, enrich 503; back: 202, delivered."""
    sink = FakeSink()
    _restart(stopped_postgres)
    with (
        make_service(_env(emulator, stopped_postgres), Overrides(memory_sink=sink)) as url,
        httpx.Client(base_url=url, timeout=10) as http,
    ):
        grant = _mint(http)
        poll_until(
            lambda: _enrich(http, grant, "before").status_code == 202,
            timeout=30,
            what="enrich accepted",
        )
        stopped_postgres.stop(remove=False)
        poll_until(
            lambda: _enrich(http, grant, "during").status_code == 503,
            timeout=30,
            what="enrich refused while PostgreSQL is down",
        )
        _assert_unavailable(_enrich(http, grant, "during"), stopped_postgres.password)
        later = _mint(http)
        _restart(stopped_postgres)
        poll_until(
            lambda: _enrich(http, later, "after").status_code == 202,
            timeout=30,
            interval=0.1,
            what="enrich accepted again",
        )
        assert _enrich(http, grant, "during").status_code == 202
        poll_until(
            lambda: (
                (sink.texts(grant["session_id"]), sink.texts(later["session_id"]))
                == (["turn before", "turn during"], ["turn after"])
            ),
            timeout=30,
            what="delivery resumed",
        )


ZEP_KEY = "zep-standin-key-outage-0123456789"


def test_a_worker_process_started_without_its_database_delivers_once_it_is_up(
    stopped_postgres: PostgresServer, tmp_path: Path
) -> None:
    """`engram-voice worker` starts with PostgreSQL down, stays healthy, then delivers."""
    zep = ServiceProcess(
        ["zep-standin"],
        {"ZEP_STANDIN_API_KEY": ZEP_KEY, "ZEP_STANDIN_DB": str(tmp_path / "zep.sqlite3")},
        log_path=tmp_path / "zep.log",
    ).start()
    env = stopped_postgres.env(
        "queue",
        ZEP_API_URL=zep.base_url,
        ZEP_API_KEY=ZEP_KEY,
        MEMORY_CONNECT_RETRY_MAX_SECONDS="0.5",
        MEMORY_POSTGRES_CONNECT_TIMEOUT_SECONDS="1",
        MEMORY_POLL_SECONDS="0.1",
        MEMORY_SQLITE_PATH=str(tmp_path / "worker.sqlite3"),
        LOG_FORMAT="json",
    )
    worker = ServiceProcess(["worker"], env, log_path=tmp_path / "worker.log")
    try:
        worker.start()  # ready means /healthz 200: it started although nothing listens
        health = httpx.get(f"{worker.base_url}/healthz", timeout=5)
        assert health.json() == {"status": "waiting for the queue"}
        # Its first attempt must have met the stopped server (not one already back up).
        poll_until(
            lambda: '"memory.queue_connect_failed"' in worker.read_log(),
            timeout=30,
            what="the worker's first connect failing",
        )
        _restart(stopped_postgres)
        queue_conninfo = stopped_postgres.conninfo("queue")

        async def enqueue() -> None:
            queue = PostgresTurnQueue(queue_conninfo, pool_size=2)
            await queue.open()
            try:
                turns = [(f"m{i}", "user", f"turn {i}", None) for i in range(5)]
                batch = EnqueueBatch(session_id="vs_w", user_id="alice", agent="elena", turns=turns)
                assert (await queue.enqueue(batch)).accepted == 5
            finally:
                await queue.close()

        asyncio.run(enqueue())

        def delivered() -> bool:
            with psycopg.connect(queue_conninfo) as conn:
                row = conn.execute("SELECT count(*) FROM memory_turns WHERE state = 1").fetchone()
            return bool(row and row[0] == 5)

        poll_until(delivered, timeout=30, interval=0.1, what="the worker delivering")
        assert httpx.get(f"{worker.base_url}/healthz", timeout=5).json() == {"status": "ok"}
        assert stopped_postgres.password not in worker.read_log()
    finally:
        worker.stop()
        zep.stop()
