"""Two service and two worker processes on one PostgreSQL queue, one of each killed mid-load.

The Done-when of issue 13: under enrich load across many sessions, with one service and
one worker killed (SIGKILL) and restarted, every acknowledged turn reaches the Zep
stand-in exactly once and in order per session. Each session's batches alternate between
the two services, so per-session order is kept across replicas; a batch whose request
died with its service is sent again to the other one (as a browser retries).

The sink is Zep v4 (the default): each process has a SQLite file of its own, as replicas
on different machines would, so the sink state (thread UUIDs, batch in flight, delivered
records) must come from the shared PostgreSQL database: each session ends in ONE Zep
thread, the one stored there.
"""

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from zep_cloud.client import AsyncZep
from zep_cloud.core.api_error import ApiError

from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner
from tests.support.memory_service import memory_service
from tests.support.polling import async_poll_until
from tests.support.postgres import PostgresServer
from tests.support.servers import ServiceProcess

ZEP_KEY = "zep-standin-key-0123456789"
TOKEN_SECRET = "r" * 64
SIGNER = MemoryTokenSigner([("k1", Secret(TOKEN_SECRET))])
SESSIONS = 30
BATCHES = 8
TURNS = 3


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ServiceProcess]:
    """Run the Zep stand-in as its own process, answering after 20 ms like a remote Zep."""
    zep = ServiceProcess(
        ["zep-standin"],
        {"ZEP_STANDIN_API_KEY": ZEP_KEY, "ZEP_STANDIN_DB": str(tmp_path / "zep.sqlite3")},
        log_path=tmp_path / "zep.log",
    ).start()
    httpx.post(
        f"{zep.base_url}/_standin/faults", json={"mode": "none", "latency_ms": 20}, timeout=5
    ).raise_for_status()
    yield zep
    zep.stop()


def _env(server: PostgresServer, database: str, zep: ServiceProcess) -> dict[str, str]:
    return server.env(
        database,
        AUTH_MODE="none",
        AZURE_OPENAI_ENDPOINTS="http://127.0.0.1:9",
        AZURE_OPENAI_API_KEY="never-sent",
        MEMORY_TOKEN_KEYS=f"k1:{TOKEN_SECRET}",
        MEMORY_RATE_PER_MINUTE="100000",
        ZEP_API_URL=zep.base_url,
        ZEP_API_KEY=ZEP_KEY,
        ZEP_TIMEOUT_SECONDS="3",
        MEMORY_POLL_SECONDS="0.1",
        MEMORY_LEASE_SECONDS="2",
        MEMORY_BACKOFF_BASE_SECONDS="0.2",
        MEMORY_BACKOFF_MAX_SECONDS="0.5",
        MEMORY_RETRY_WAIT_INITIAL_SECONDS="0.05",
        MEMORY_RETRY_WAIT_MAX_SECONDS="0.2",
        MEMORY_CIRCUIT_COOLDOWN_SECONDS="0.5",
        MEMORY_POSTGRES_POOL_SIZE="6",
        LOG_FORMAT="json",
    )


def _turns(session: str, batch: int) -> list[dict[str, str]]:
    return [
        {"id": f"{session}-m{i:03d}", "role": "user", "text": f"{session} turn {i}"}
        for i in range(batch * TURNS, (batch + 1) * TURNS)
    ]


async def _threads(zep: ServiceProcess) -> dict[str, dict[str, list[str]]]:
    """Return, per session, the Zep v4 threads holding its messages and their contents."""
    client = AsyncZep(base_url=f"{zep.base_url}/api/v4", api_key=ZEP_KEY, max_retries=0, timeout=5)
    try:
        user = await client.user.lookup(user_id="alice")
    except ApiError as exc:
        if exc.status_code == 404:
            return {}
        raise
    found: dict[str, dict[str, list[str]]] = {}
    threads = await client.thread.list(user_uuid=str(user.uuid_), page_size=1000)
    for thread in threads.items or []:
        pager = await client.thread.list_messages(str(thread.uuid_), page_size=1000)
        async for message in pager:
            session = str((message.metadata or {})["session_id"])
            found.setdefault(session, {}).setdefault(str(thread.uuid_), []).append(
                message.content or ""
            )
    return found


def _stored_threads(server: PostgresServer, database: str) -> dict[str, str]:
    """Return the thread UUID each session has in the shared sink state."""
    with psycopg.connect(server.conninfo(database)) as conn:
        rows = conn.execute(
            "SELECT our_id, sink_id FROM memory_sink_ids WHERE sink = 'zep-v4' AND kind = 'thread'"
        ).fetchall()
    return {str(our): str(theirs) for our, theirs in rows}


def _start(
    env: dict[str, str], tmp_path: Path
) -> tuple[list[ServiceProcess], list[ServiceProcess]]:
    """Start two services (no worker) and two workers, each with a SQLite file of its own."""
    services = [
        memory_service(
            {**env, "MEMORY_WORKER": "off", "MEMORY_SQLITE_PATH": str(tmp_path / f"s{i}.db")},
            tmp_path / f"service{i}.log",
        ).start()
        for i in range(2)
    ]
    workers = [
        ServiceProcess(
            ["worker"],
            {**env, "MEMORY_SQLITE_PATH": str(tmp_path / f"w{i}.db")},
            log_path=tmp_path / f"worker{i}.log",
        ).start()
        for i in range(2)
    ]
    return services, workers


async def test_every_acknowledged_turn_arrives_once_in_order_despite_kill_9(
    postgres_server, zep, tmp_path
):
    """Kill -9 a service and a worker mid-load, restart them: Zep gets each turn once, in order."""
    database = postgres_server.new_database("replicas")
    env = _env(postgres_server, database, zep)
    services, workers = _start(env, tmp_path)
    acknowledged = 0
    kill_now = asyncio.Event()
    try:
        async with httpx.AsyncClient(timeout=10) as client:

            async def post(session: str, batch: int) -> None:
                """Send one batch until a service acknowledges it, alternating services."""
                nonlocal acknowledged
                body = {"session_id": session, "messages": _turns(session, batch)}
                token = SIGNER.issue(session_id=session, user_id="alice", agent="elena").token
                targets = itertools.cycle(services[batch % 2 :] + services[: batch % 2])
                for _ in range(200):
                    target = next(targets)
                    try:
                        answer = await client.post(
                            f"{target.base_url}/memory/enrich",
                            json=body,
                            headers={"Authorization": f"Bearer {token}"},
                        )
                    except httpx.TransportError:
                        await asyncio.sleep(0.05)
                        continue
                    if answer.status_code == 202:
                        acknowledged += 1
                        if acknowledged >= SESSIONS * BATCHES // 3:
                            kill_now.set()
                        return
                    assert answer.status_code == 503, answer.text
                    await asyncio.sleep(0.05)
                raise AssertionError(f"{session} batch {batch} was never acknowledged")

            async def conversation(session: str) -> None:
                for batch in range(BATCHES):
                    await post(session, batch)

            async def crash_and_restart() -> None:
                await kill_now.wait()
                services[0].kill()
                workers[0].kill()
                await asyncio.to_thread(services[0].start)
                await asyncio.to_thread(workers[0].start)

            sessions = [f"vs_rep{i:02d}" for i in range(SESSIONS)]
            async with asyncio.timeout(120):
                await asyncio.gather(crash_and_restart(), *map(conversation, sessions))
        assert acknowledged == SESSIONS * BATCHES
        expected = {s: [f"{s} turn {i}" for i in range(BATCHES * TURNS)] for s in sessions}
        got: dict[str, dict[str, list[str]]] = {}

        async def all_delivered() -> bool:
            got.clear()
            got.update(await _threads(zep))
            return all(sum(map(len, got.get(s, {}).values())) >= len(expected[s]) for s in sessions)

        await async_poll_until(all_delivered, timeout=90, interval=0.25, what="delivery")
        stored = _stored_threads(postgres_server, database)
        # One thread per session (the one every replica found in the shared state), all
        # of the session's turns in it once, in order.
        assert got == {s: {stored[s]: expected[s]} for s in sessions}
    finally:
        for process in (*services, *workers):
            process.stop()
