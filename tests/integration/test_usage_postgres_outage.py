"""USAGE_STORE=postgres with the database down (at start-up, or later): usage catches up.

The test's own PostgreSQL server holds today's usage from before (two calls of alice) and
is stopped: the service starts while nothing listens on its port, sets up a call (the
daily limit cannot count the stored calls yet), and once the server is started again on
that port the buffered writes are committed after the stored totals were read, so the
limit counts every call exactly once. A database that stops under a running store costs
no write either: the batch is tried again until it is back. Every wait is a bounded poll.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx
import psycopg
import pytest
from aiortc import RTCSessionDescription

from engram_voice.devpostgres import postgres_bin, start_local_postgres
from engram_voice.services import Overrides
from engram_voice.usage.postgres_store import PostgresUsageStore
from engram_voice.usage.records import CallEnded, CallStarted, TokensUsed
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.calls import HeaderUsers, delete_call, post_call
from tests.support.clock import FakeClock
from tests.support.polling import async_poll_until
from tests.support.postgres import PostgresServer, start_postgres
from tests.support.realtime_client import RealtimeTestClient

DAY = "2027-03-01"
NOON = datetime(2027, 3, 1, 12, tzinfo=UTC).timestamp()


async def _seed(server: PostgresServer, calls: int) -> None:
    """Store ``calls`` ended calls of alice today, as an earlier process would have."""
    store = PostgresUsageStore(server.conninfo("queue"))
    await store.start()
    for n in range(calls):
        store.record(CallStarted(f"before-{n}", "alice", "elena", "azure-openai", DAY, NOON - 600))
        store.record(CallEnded(f"before-{n}", "alice", DAY, 60.0, "client_hangup", NOON - 540))
    await store.flush()
    await store.close()


@pytest.fixture(name="own_postgres")
def fixture_own_postgres() -> Iterator[PostgresServer]:
    """Yield a server of this test's own (it may stop it) with an empty database ``queue``."""
    if postgres_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = start_postgres(fsync=False)
    try:
        with psycopg.connect(server.conninfo(), autocommit=True) as conn:
            conn.execute('CREATE DATABASE "queue"')
        yield server
    finally:
        server.stop()


@pytest.fixture(name="stopped_postgres")
async def fixture_stopped_postgres(own_postgres: PostgresServer) -> PostgresServer:
    """Return the stopped server, its database ``queue`` holding two of alice's calls today."""
    await _seed(own_postgres, 2)
    own_postgres.stop(remove=False)
    return own_postgres


@pytest.fixture(name="browsers")
async def fixture_browsers() -> AsyncIterator[list[RealtimeTestClient]]:
    """Provide two aiortc peers that behave like browsers (closed afterwards)."""
    clients = [RealtimeTestClient() for _ in range(2)]
    yield clients
    for client in clients:
        await client.close()


def _restart(server: PostgresServer) -> None:
    """Start the stopped server again on its port (its data kept)."""
    again = start_local_postgres(server.root, fsync=False, database="queue", port=server.port)
    server.process = again.process


async def _usage(url: str) -> dict[str, Any]:
    """Return the ``usage`` section of ``/status``."""
    async with httpx.AsyncClient(timeout=10) as http:
        section: dict[str, Any] = (await http.get(f"{url}/status")).json()["usage"]
    return section


async def test_a_service_started_without_the_usage_database_meters_once_it_is_up(
    emulator: Emulator,
    stopped_postgres: PostgresServer,
    make_service: ServiceFactory,
    browsers: list[RealtimeTestClient],
) -> None:
    """Down: calls are set up, /status says connecting; up: stored and limited, once each."""
    env = service_env(
        emulator,
        **stopped_postgres.env(
            "queue",
            USAGE_STORE="postgres",
            USAGE_MAX_CALLS_PER_DAY="3",
            MEMORY_CONNECT_RETRY_MAX_SECONDS="0.5",
            MEMORY_POSTGRES_CONNECT_TIMEOUT_SECONDS="1",
            MEMORY_STORE_TIMEOUT_SECONDS="1",
        ),
    )
    overrides = Overrides(authenticator=HeaderUsers(), usage_clock=FakeClock(NOON))
    with make_service(env, overrides) as url:
        down: dict[str, Any] = await async_poll_until(
            partial(_usage_when, url, lambda u: u["store"]["connection"].get("last_error")),
            what="a failed usage store attempt on /status",
        )
        first = await post_call(url, await browsers[0].offer())
        assert first.status_code == 201, first.text  # 2 stored + 0 here: not known yet
        await browsers[0].pc.setRemoteDescription(
            RTCSessionDescription(sdp=first.json()["sdp_answer"], type="answer")
        )
        assert (await delete_call(url, first.json()["call_id"])).status_code == 204

        _restart(stopped_postgres)
        up: dict[str, Any] = await async_poll_until(
            partial(
                _usage_when,
                url,
                lambda u: u["store"]["written"] >= 2 and not u["store"]["pending_writes"],
            ),
            timeout=30,
            interval=0.1,
            what="the buffered usage committed",
        )
        refused = await post_call(url, await browsers[1].offer())

    assert down["store"]["connection"]["state"] == "connecting"
    assert down["store"]["connection"]["last_error"] == "no database connection in time"
    assert (down["store"]["healthy"], down["limits"]["stored_totals_loaded"]) == (False, False)
    assert stopped_postgres.password not in str(down)
    assert up["store"]["connection"]["state"] == "connected"
    assert (up["store"]["healthy"], up["limits"]["stored_totals_loaded"]) == (True, True)
    assert up["today"]["calls"] == 3
    assert refused.status_code == 429, refused.text
    assert refused.json()["limit"] == "calls"

    reader = PostgresUsageStore(stopped_postgres.conninfo("queue"))
    await reader.start()
    try:
        (row,) = await reader.daily(user_id="alice")
    finally:
        await reader.close()
    assert (row.day, row.calls) == (DAY, 3)
    assert row.seconds >= 120.0


async def _usage_when(url: str, ready: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    """Return ``/status`` usage when ``ready(usage)`` holds, else an empty (falsy) dict."""
    usage = await _usage(url)
    return usage if ready(usage) else {}


async def test_writes_made_while_the_database_is_away_later_are_stored_once_it_is_back(
    own_postgres: PostgresServer,
) -> None:
    """A database that stops under a running store costs no write: the batch waits, retried."""
    store = PostgresUsageStore(own_postgres.conninfo("queue"), connect_wait_max=0.5)
    await store.start()
    try:
        store.record(CallStarted("c1", "alice", "elena", "azure-openai", DAY, NOON))
        await store.flush()
        own_postgres.stop(remove=False)
        store.record(TokensUsed("c1", "alice", DAY, {"output_audio": 7}))
        store.record(CallEnded("c1", "alice", DAY, 42.0, "client_hangup", NOON + 42))
        store.record(CallStarted("c2", "bob", "elena", "azure-openai", DAY, NOON + 1))
        waiting: dict[str, Any] = await async_poll_until(
            partial(_store_when, store, lambda d: d["last_error"] and d["pending_writes"] == 3),
            timeout=30,
            what="the store retrying its batch",
        )
        _restart(own_postgres)
        done: dict[str, Any] = await async_poll_until(
            partial(_store_when, store, lambda d: d["written"] == 4),
            timeout=30,
            interval=0.1,
            what="the held batch written",
        )
        rows = await store.daily()
    finally:
        await store.close()
    assert (waiting["healthy"], waiting["dropped_writes"]) == (False, 0)
    assert (done["healthy"], done["dropped_writes"], done["pending_writes"]) == (True, 0, 0)
    assert [(r.user_id, r.calls, r.seconds, r.tokens["output_audio"]) for r in rows] == [
        ("alice", 1, 42.0, 7),
        ("bob", 1, 0.0, 0),
    ]


async def _store_when(
    store: PostgresUsageStore, ready: Callable[[dict[str, Any]], object]
) -> dict[str, Any]:
    """Return the store's description when ``ready(it)`` holds, else an empty (falsy) dict."""
    described = await store.describe()
    return described if ready(described) else {}
