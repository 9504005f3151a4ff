"""Cross-process wake-up on PostgreSQL: LISTEN/NOTIFY on one channel.

After a transaction that made turns ready commits (a group commit that stored new turns,
a replay), :class:`TurnNotifier` sends :data:`NOTIFY_SQL` in a transaction of its own:
at most one in flight per process, sends at least 50 ms apart, and one more after a send
for the commits that came in the meantime, so each commit is followed by a notification
and a burst of commits by a few. The NOTIFY is deliberately not part of the writers'
transactions: PostgreSQL serialises the commits of transactions that notify (one lock,
held through the WAL flush), which cost three concurrent writers 18-50 % of their
commits per second (``bench/bench_pg_notify.py``). A worker in any process keeps
:class:`TurnListener` on a dedicated connection (not one of the pool's) and is woken at
once instead of after ``MEMORY_POLL_SECONDS``.

Notifications are a shortcut, never the only path: a listener that is not connected
misses them, so the worker keeps polling, and every (re)connection wakes it once to catch
up. The connection is checked every :data:`PING_SECONDS` (a ``SELECT 1`` bounded by the
connect timeout) so a silently dead one is noticed, and it is opened again with
exponential backoff (0.5 s doubling up to 30 s) whenever it is lost. Each connection
signs in with the pool's password source, so a rotated password or a fresh Entra token
is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import psycopg
import structlog
from psycopg.conninfo import make_conninfo

from engram_voice.memory.postgres_auth import PasswordSource

__all__ = ["CHANNEL", "NOTIFY_SQL", "PING_SECONDS", "TurnListener", "TurnNotifier"]

_logger = structlog.get_logger("engram_voice.memory.queue")
CHANNEL = "engram_memory_turns"
NOTIFY_SQL = f"NOTIFY {CHANNEL}"
"""Sent after the commits that made turns ready (by :class:`TurnNotifier`)."""
PING_SECONDS = 30.0
_WAIT_INITIAL = 0.5
_WAIT_MAX = 30.0


class TurnListener:
    """Listens on :data:`CHANNEL` and calls ``on_turns`` for every notification."""

    def __init__(
        self,
        conninfo: str,
        password: PasswordSource,
        on_turns: Callable[[], None],
        *,
        connect_timeout: float,
        describe_error: Callable[[BaseException], str],
        ping_seconds: float = PING_SECONDS,
    ) -> None:
        self._conninfo = make_conninfo(conninfo, application_name="engram-voice-listen")
        self._password = password
        self._on_turns = on_turns
        self._timeout = connect_timeout
        self._describe = describe_error
        self._ping = ping_seconds
        self._task: asyncio.Task[None] | None = None
        self.listening = False
        """True while the LISTEN connection is up."""
        self.notifications = 0
        """Notifications received (for status and tests)."""

    def start(self) -> None:
        """Start listening in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="memory-queue-listen")

    async def close(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.listening = False

    def describe(self) -> dict[str, Any]:
        """Describe the listener for ``/status``."""
        return {"listening": self.listening, "notifications": self.notifications}

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        secret = await self._password.password()
        kwargs: dict[str, Any] = {} if secret is None else {"password": secret}
        async with asyncio.timeout(self._timeout + 1):
            return await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True, **kwargs)

    async def _run(self) -> None:
        wait = _WAIT_INITIAL
        down_since: float | None = None
        while True:
            try:
                conn = await self._connect()
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    _logger.info(
                        "memory.queue_listening",
                        channel=CHANNEL,
                        down_seconds=None
                        if down_since is None
                        else round(time.monotonic() - down_since, 1),
                    )
                    wait, down_since = _WAIT_INITIAL, None
                    self._on_turns()  # catch up on whatever came while nobody listened
                    await self._receive(conn)
            except Exception as exc:  # noqa: BLE001 - the listener outlives any failure; polling covers
                first = down_since is None
                if first:
                    down_since = time.monotonic()
                if first or wait >= _WAIT_MAX:
                    _logger.warning(
                        "memory.queue_listen_lost"
                        if self.listening
                        else "memory.queue_listen_failed",
                        reason=self._describe(exc),
                        retry_in_seconds=wait,
                    )
            self.listening = False
            await asyncio.sleep(wait)
            wait = min(_WAIT_MAX, wait * 2)

    async def _receive(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Wake the worker per notification; ping when quiet so a dead socket is noticed."""
        while True:
            async for _ in conn.notifies(timeout=self._ping):
                self.notifications += 1
                self._on_turns()
            async with asyncio.timeout(self._timeout):
                await conn.execute("SELECT 1")


class TurnNotifier:
    """Sends a notification after commits, coalesced: one in flight, one more if needed.

    ``send`` runs :data:`NOTIFY_SQL` in a short transaction of its own (a pooled
    connection, bounded by the pool's timeout; about 0.12-0.14 ms of this process's CPU).
    Sends are at least ``min_interval`` apart, so under load a process spends at most
    one such transaction per interval on wake-ups, whatever its commit rate, and a worker
    hears of a commit at most ``min_interval`` plus one round trip after it. A failure is
    logged at debug level only: the workers' polling covers a lost wake-up.
    """

    def __init__(self, send: Callable[[], Any], *, min_interval: float = 0.05) -> None:
        self._send = send
        self._min_interval = min_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        """Notifications sent (for tests)."""

    def committed(self) -> None:
        """Note a commit that made turns ready: a notification follows it."""
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="memory-queue-notify")

    async def close(self) -> None:
        """Stop, sending first the notification still owed (if any)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._wake.is_set():
            self._wake.clear()
            await self._send_once()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()  # commits from here on get the next notification
            await self._send_once()
            await asyncio.sleep(self._min_interval)  # commits meanwhile share the next one

    async def _send_once(self) -> None:
        try:
            await self._send()
        except Exception as exc:  # noqa: BLE001 - a lost wake-up only waits for the poll
            _logger.debug("memory.queue_notify_failed", error=type(exc).__name__)
        else:
            self.sent += 1
