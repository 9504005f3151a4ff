"""The PostgreSQL queue's worker calls and reads cost one round trip each (a claim: two).

The queue talks to a real server through a loopback proxy that counts the messages a
client waits on (``Sync`` after an extended-protocol statement, ``Query`` for a simple
one such as ``BEGIN`` or ``COMMIT``): each is one round trip. A call that opened a
transaction of its own would show its BEGIN and COMMIT as two more.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.queue import EnqueueBatch
from tests.support.postgres import PostgresServer

_UNTYPED_REQUESTS = {80877103, 80877104}  # SSLRequest, GSSENCRequest: answered by one byte
_WAITED_ON = {b"S", b"Q"}  # Sync, Query: the client waits for ReadyForQuery


class CountingProxy:
    """A loopback TCP proxy to PostgreSQL that counts the round trips clients make."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self.messages: collections.Counter[bytes] = collections.Counter()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def trips(self) -> int:
        """Return the round trips counted so far."""
        return sum(self.messages[kind] for kind in _WAITED_ON)

    async def start(self) -> int:
        """Listen on a free loopback port; return it."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and drop every proxied connection."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(10):
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        pumps = [
            asyncio.create_task(self._frontend(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        with contextlib.suppress(Exception):
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
            self._tasks.discard(task)
        writer.close()
        up_writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    async def _frontend(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Forward the client's messages, counting them by type after the startup packet."""
        while True:  # untyped packets: optional SSL/GSS requests, then the startup message
            head = await reader.readexactly(8)
            length, code = struct.unpack("!ii", head)
            writer.write(head + await reader.readexactly(length - 8))
            await writer.drain()
            if code not in _UNTYPED_REQUESTS:
                break
        while True:
            head = await reader.readexactly(5)
            kind, length = head[:1], struct.unpack("!i", head[1:])[0]
            self.messages[kind] += 1
            writer.write(head + await reader.readexactly(length - 4))
            await writer.drain()


@pytest.fixture(name="queues")
async def fixture_queues(
    postgres_server: PostgresServer,
) -> AsyncIterator[tuple[PostgresTurnQueue, PostgresTurnQueue, CountingProxy]]:
    """Yield a queue that enqueues directly and one whose every statement passes the proxy."""
    conninfo = postgres_server.conninfo(postgres_server.new_database("trips"))
    target = conninfo_to_dict(conninfo)
    proxy = CountingProxy(str(target["host"]), int(str(target["port"])))
    port = await proxy.start()
    writer = PostgresTurnQueue(conninfo, pool_size=2)
    worker = PostgresTurnQueue(make_conninfo(conninfo, port=port), pool_size=2)
    await writer.open()
    await worker.open()
    try:
        yield writer, worker, proxy
    finally:
        await worker.close()
        await writer.close()
        await proxy.close()


async def _trips(proxy: CountingProxy, call: Callable[[], Awaitable[Any]]) -> tuple[int, Any]:
    """Return the round trips ``call`` made through the proxy, and its result."""
    before = proxy.trips
    result = await call()
    return proxy.trips - before, result


_OPERATIONS = ["dead_letter", "mark_delivered", "release", "renew", "schedule_retry"]


async def _outcome(queue: PostgresTurnQueue, operation: str, seqs: list[int]) -> object:
    """Run one of the worker's calls on the session ``w`` holds."""
    lease = {"owner": "w", "session_id": "vs_1"}
    if operation == "renew":
        return await queue.renew(**lease, lease_seconds=30, now=2.0)
    if operation == "mark_delivered":
        return await queue.mark_delivered(**lease, seqs=seqs[:2], now=2.0)
    if operation == "schedule_retry":
        return await queue.schedule_retry(**lease, error="down", next_attempt_at=60.0)
    if operation == "dead_letter":
        return await queue.dead_letter(**lease, seqs=seqs[:2], reason="400", attempts=1, now=2.0)
    return await queue.release(**lease, next_attempt_at=2.0)


@pytest.mark.parametrize("operation", _OPERATIONS)
async def test_each_worker_call_on_postgres_is_one_round_trip(
    queues: tuple[PostgresTurnQueue, PostgresTurnQueue, CountingProxy], operation: str
) -> None:
    """Claiming costs two round trips (one when nothing is ready); every other call one."""
    writer, worker, proxy = queues

    async def claim() -> Any:
        return await worker.claim(owner="w", sessions=4, turns=10, lease_seconds=30, now=1.0)

    trips, nothing = await _trips(proxy, claim)
    assert (trips, nothing) == (1, [])
    turns = [(f"m{i}", "user", f"turn {i}", None) for i in range(3)]
    await writer.enqueue(EnqueueBatch(session_id="vs_1", user_id="u", agent="a", turns=turns))
    trips, claimed = await _trips(proxy, claim)
    assert trips == 2
    seqs = [turn.seq for turn in claimed[0].turns]
    assert len(seqs) == len(turns)
    trips, _ = await _trips(proxy, lambda: _outcome(worker, operation, seqs))
    assert trips == 1


_READS: dict[str, Callable[[PostgresTurnQueue], Awaitable[object]]] = {
    "stats": lambda q: q.stats(),
    "session_progress": lambda q: q.session_progress("vs_1"),
    "dead_letters": lambda q: q.dead_letters(limit=10, include_replayed=True),
}


@pytest.mark.parametrize("read", sorted(_READS))
async def test_each_status_read_on_postgres_is_one_round_trip(
    queues: tuple[PostgresTurnQueue, PostgresTurnQueue, CountingProxy], read: str
) -> None:
    """The worker's once-a-second stats and the operators' reads are one statement each."""
    writer, worker, proxy = queues
    await writer.enqueue(
        EnqueueBatch(session_id="vs_1", user_id="u", agent="a", turns=[("m", "user", "t", None)])
    )
    trips, _ = await _trips(proxy, lambda: _READS[read](worker))
    assert trips == 1
