"""The Zep v4 sink: Zep Cloud through ``zep-cloud`` 4.x (``AsyncZep``, users and threads).

Zep v4 addresses users and threads by UUIDs it generates and has no client message id.
So this sink creates the Zep user (our user id as its ``user_id``) and one thread per
session once, keeps their UUIDs in the sink state store (and a bounded cache), and makes
delivery exactly-once with two mechanisms together (the ids and keys it derives are in
:mod:`engram_voice.memory.zep_cloud_wire`):

- every call that writes sends a deterministic ``Idempotency-Key`` (user: our user id;
  thread: our session id; batch: thread, session, first/last turn id and part, count),
  so Zep answers a repeated call as it answered the first;
- the batch is recorded as *in flight* before it is sent and as *delivered* after Zep's
  answer; a redelivery first re-sends the recorded batch unchanged (same key, same
  messages), then skips every message recorded as delivered.

The SDK's own retries are off (``max_retries=0``): the delivery's retry policy is the
only one. Each call is bounded by ``ZEP_TIMEOUT_SECONDS`` (connect:
``ZEP_CONNECT_TIMEOUT_SECONDS``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import httpx
import structlog
from zep_cloud.client import AsyncZep
from zep_cloud.core.api_error import ApiError
from zep_cloud.types.add_message import AddMessage

from engram_voice.memory import zep_errors
from engram_voice.memory.settings import ZepSettings
from engram_voice.memory.sink import Keepalive, SinkMessage, SinkRejectedError, SinkSession
from engram_voice.memory.sink_state import PendingBatch, SinkStateStore
from engram_voice.memory.zep_cloud_wire import (
    add_message,
    batch_key,
    error_detail,
    idempotency_key,
    zep_user_id,
)
from engram_voice.netutil import public_origin

__all__ = ["ZepCloudSink"]

_logger = structlog.get_logger("engram_voice.memory.zep_v4")
_T = TypeVar("_T")
_NOT_FOUND = 404
_ALREADY_EXISTS = frozenset({400, 409})
_CACHED = 10_000


class _Lru:
    def __init__(self) -> None:
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > _CACHED:
            self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)


class ZepCloudSink:
    """A :class:`~engram_voice.memory.sink.MemorySink` backed by Zep Cloud v4."""

    kind = "zep-v4"
    batch_limit = 30
    """Zep accepts at most 30 messages per ``thread.add_messages`` call."""

    def __init__(
        self,
        settings: ZepSettings,
        state: SinkStateStore,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if settings.api_url is None or settings.api_key is None:
            raise ValueError("ZepCloudSink needs ZEP_API_URL and ZEP_API_KEY")
        self._url = settings.api_url
        self.max_chars = settings.max_message_chars
        self._total = settings.timeout_seconds
        self._state = state
        self._clock = clock
        timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        # Keep as many idle connections as sessions can be in flight (MEMORY_WORKER_CONCURRENCY
        # is at most 64): httpx keeps 20 by default, so 32 parallel calls would reconnect.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=64)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport, limits=limits)
        self._client = AsyncZep(
            base_url=f"{settings.api_url}/api/v4",
            api_key=settings.api_key.reveal(),
            max_retries=0,  # one retry policy: the delivery's
            httpx_client=self._http,
        )
        self._users = _Lru()
        self._threads = _Lru()

    def __repr__(self) -> str:
        return f"ZepCloudSink(url={self.describe()['url']!r})"

    async def _call(self, what: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        """Run one SDK call under a total timeout, translating failures to sink errors."""
        try:
            async with asyncio.timeout(self._total + 1.0):
                return await fn()
        except ApiError as exc:
            code, message = error_detail(exc.body)
            raise zep_errors.from_status(
                what,
                exc.status_code or 0,
                code=code,
                message=message,
                wait=zep_errors.retry_after(exc.headers),
            ) from None
        except (TimeoutError, httpx.TransportError, ValueError) as exc:
            raise zep_errors.from_transport(what, exc) from None

    # -- ids ------------------------------------------------------------------------------

    async def _user(self, user_id: str, *, replacing: str | None = None) -> str:
        """Return the Zep user UUID of our user, creating the user once."""
        cached = self._users.get(user_id) if replacing is None else None
        if cached is not None:
            return cached
        stored = await self._state.get_id("user", user_id) if replacing is None else None
        if stored is None:
            created = await self._create_user(user_id, replacing)
            # Another replica may have stored its user first: every replica uses that one.
            stored = await self._state.put_id(
                "user", user_id, created, now=self._clock(), replacing=replacing
            )
        self._users.put(user_id, stored)
        return stored

    async def _create_user(self, user_id: str, replacing: str | None) -> str:
        external = zep_user_id(user_id)
        key = idempotency_key("user", user_id, replacing or "")
        try:
            user = await self._call(
                "create user",
                lambda: self._client.user.create(user_id=external, idempotency_key=key),
            )
        except SinkRejectedError as exc:
            if exc.status not in _ALREADY_EXISTS:
                raise
            try:  # created before (by us, before a crash, or by another process)
                user = await self._call(
                    "look up user", lambda: self._client.user.lookup(user_id=external)
                )
            except SinkRejectedError:
                raise exc from None
        else:
            _logger.info("memory.zep_user_created")
        if not user.uuid_:
            raise SinkRejectedError("create user: zep answered without a uuid")
        return str(user.uuid_)

    async def _thread(self, session: SinkSession, *, replacing: str | None = None) -> str:
        """Return the Zep thread UUID of the session, creating it (and the user) once."""
        session_id = session.session_id
        cached = self._threads.get(session_id) if replacing is None else None
        if cached is not None:
            return cached
        stored = await self._state.get_id("thread", session_id) if replacing is None else None
        if stored is None:
            created = await self._create_thread(session, replacing)
            # A replica that took the session over mid-call may have stored its thread
            # first: the first stored wins, and this one's (empty) thread is never written.
            stored = await self._state.put_id(
                "thread", session_id, created, now=self._clock(), replacing=replacing
            )
        self._threads.put(session_id, stored)
        return stored

    async def _create_thread(self, session: SinkSession, replacing: str | None) -> str:
        user = await self._user(session.user_id)
        try:
            thread = await self._call_create_thread(session.session_id, user, replacing)
        except SinkRejectedError as exc:
            if exc.status != _NOT_FOUND:
                raise
            user = await self._user(session.user_id, replacing=user)  # the user vanished
            thread = await self._call_create_thread(session.session_id, user, replacing)
        if not thread.uuid_:
            raise SinkRejectedError("create thread: zep answered without a uuid")
        _logger.info("memory.zep_thread_created", session_id=session.session_id)
        return str(thread.uuid_)

    async def _call_create_thread(self, session_id: str, user: str, replacing: str | None) -> Any:
        key = idempotency_key("thread", session_id, user, replacing or "")
        return await self._call(
            "create thread",
            lambda: self._client.thread.create(user_uuid=user, idempotency_key=key),
        )

    async def _forget_thread(self, session_id: str) -> None:
        self._threads.drop(session_id)
        await self._state.forget_id("thread", session_id)

    # -- delivery -------------------------------------------------------------------------

    async def deliver(
        self, session: SinkSession, messages: Sequence[SinkMessage], keepalive: Keepalive
    ) -> int:
        """Store the batch exactly once; return how many messages Zep already had."""
        session_id = session.session_id
        todo = list(messages)
        pending = await self._state.pending(session_id)
        if pending is not None:
            todo = await self._finish_pending(session, pending, todo, keepalive)
        done = await self._state.delivered(session_id, [m.key for m in todo])
        already = len(messages) - len(todo) + len(done)
        todo = [m for m in todo if m.key not in done]
        if not todo:
            return already
        thread = await self._thread(session)
        await keepalive()
        try:
            await self._send(session, thread, todo)
        except SinkRejectedError as exc:
            if exc.status != _NOT_FOUND:
                raise
            _logger.warning("memory.zep_thread_missing", session_id=session_id)
            await self._forget_thread(session_id)
            thread = await self._thread(session, replacing=thread)
            await keepalive()
            await self._send(session, thread, todo)
        return already

    async def _finish_pending(
        self,
        session: SinkSession,
        pending: PendingBatch,
        todo: list[SinkMessage],
        keepalive: Keepalive,
    ) -> list[SinkMessage]:
        """Re-send the batch in flight unchanged (its turns are still queued) first."""
        session_id = session.session_id
        keys = {m.key for m in pending.messages}
        if not keys & {m.key for m in todo}:
            # Its turns left the queue (delivered or dead-lettered): nothing to re-send.
            await self._state.abandon(session_id, pending.key)
            return todo
        _logger.info(
            "memory.zep_batch_resent", session_id=session_id, messages=len(pending.messages)
        )
        await keepalive()
        try:
            await self._post(session, pending.target, pending.key, pending.messages)
        except SinkRejectedError as exc:
            await self._state.abandon(session_id, pending.key)
            if exc.status != _NOT_FOUND:
                raise
            await self._forget_thread(session_id)  # its thread is gone: send anew
            return todo
        await self._state.complete(
            session_id, pending.key, [m.key for m in pending.messages], now=self._clock()
        )
        return [m for m in todo if m.key not in keys]

    async def _send(self, session: SinkSession, thread: str, todo: list[SinkMessage]) -> None:
        key = batch_key(thread, session.session_id, todo)
        session_id = session.session_id
        await self._state.begin(
            session_id, PendingBatch(key=key, target=thread, messages=todo), now=self._clock()
        )
        try:
            await self._post(session, thread, key, todo)
        except SinkRejectedError:
            await self._state.abandon(session_id, key)  # refused: Zep stored nothing
            raise
        await self._state.complete(session_id, key, [m.key for m in todo], now=self._clock())

    async def _post(
        self, session: SinkSession, thread: str, key: str, messages: Sequence[SinkMessage]
    ) -> None:
        payload = cast("list[AddMessage]", [add_message(session, m) for m in messages])
        await self._call(
            "add messages",
            lambda: self._client.thread.add_messages(thread, messages=payload, idempotency_key=key),
        )

    def describe(self) -> dict[str, Any]:
        """Return the sink kind and its URL without credentials, path or query."""
        return {"kind": self.kind, "url": public_origin(self._url)}

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
