"""Stopping while shared storage is still connecting leaves nothing running behind.

``stop()`` cancels the background connect at whatever step it is; each PostgreSQL store
(the queue, the v4 sink's state beside it) must then close the pool it was opening, or
its scheduler and workers keep dialling the database after the process said it stopped.
The database is a loopback socket that accepts and never answers, or a closed port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.postgres_sink_state import PostgresSinkState
from tests.support.polling import async_poll_until
from tests.support.servers import free_port


class _Silent:
    """A loopback server that accepts connections and never answers them."""

    def __init__(self) -> None:
        self.accepted = 0
        self._held: list[asyncio.StreamWriter] = []

    async def handle(
        self,
        reader: asyncio.StreamReader,  # noqa: ARG002 - the callback's signature
        writer: asyncio.StreamWriter,
    ) -> None:
        """Hold the connection open without a word."""
        self.accepted += 1
        self._held.append(writer)

    def close(self) -> None:
        """Drop every held connection."""
        for writer in self._held:
            writer.close()


@pytest.fixture(name="database", params=["silent", "closed"])
async def fixture_database(request: pytest.FixtureRequest) -> AsyncIterator[tuple[int, _Silent]]:
    """Yield a port whose 'database' never answers, or nothing listens on."""
    silent = _Silent()
    if request.param == "closed":
        yield free_port(), silent
        return
    server = await asyncio.start_server(silent.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, silent
    finally:
        silent.close()
        server.close()


Store = PostgresTurnQueue | PostgresSinkState
STORES: dict[str, tuple[str, Callable[[str], Store]]] = {
    "queue": ("memory-queue", lambda c: PostgresTurnQueue(c, connect_timeout=2)),
    "sink_state": (
        "memory-sink-state",
        lambda c: PostgresSinkState(c, sink="zep-v4", connect_timeout=2),
    ),
}


def _pool_tasks(prefix: str) -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(prefix) and not t.done()]


@pytest.mark.parametrize("kind", list(STORES))
async def test_an_open_cancelled_while_connecting_closes_its_pool(
    database: tuple[int, _Silent], kind: str
) -> None:
    """Cancelled mid-connect, a store leaves no pool scheduler or worker task running."""
    port, _ = database
    prefix, build = STORES[kind]
    store = build(f"host=127.0.0.1 port={port} dbname=none user=none")
    opening = asyncio.create_task(store.open())
    await async_poll_until(lambda: bool(_pool_tasks(prefix)), timeout=10, what="pool started")
    opening.cancel()
    await asyncio.gather(opening, return_exceptions=True)
    await async_poll_until(
        lambda: not _pool_tasks(prefix), timeout=10, what="the pool's tasks ended"
    )
    await store.close()
