"""The Zep v2 sink: self-hosted Zep servers through zep-python (``/api/v2``).

Zep v2's rules live here: at most 30 messages per ``memory.add``; every message carries a
deterministic ``uuid`` derived from (session, turn id, part), and a uuid Zep already
holds rejects the whole batch with 400 (or 409), so a rejected batch is re-sent message
by message and a message Zep already holds counts as delivered; a 404 (the session
vanished) recreates the session once. The session and the user are created on first use.

We build the SDK's ``AsyncBaseClient`` (the class ``AsyncZep`` extends, with the same
``memory`` and ``user`` clients) because ``AsyncZep`` silently replaces ``base_url``
with the process's ``ZEP_API_URL``; settings come from our own mapping instead. The SDK
drops response headers from its errors, so an httpx response hook records
``Retry-After`` in a context variable that the failing call reads back.

The SDK also puts ids into URL paths unencoded (``users/{user_id}``, joined with
``urljoin``), so ``a/b``, ``x?y=1#z`` or ``..`` would address another path. Every id
this sink sends to Zep goes through :func:`zep_id` first.
"""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import httpx
import structlog
from zep_python.base_client import AsyncBaseClient
from zep_python.core.api_error import ApiError
from zep_python.types.message import Message

from engram_voice.httppolicy import is_transient
from engram_voice.memory import zep_errors
from engram_voice.memory.settings import ZepSettings
from engram_voice.memory.sink import (
    Keepalive,
    SinkMessage,
    SinkRejectedError,
    SinkSession,
)
from engram_voice.netutil import public_origin

__all__ = ["ZepSink", "message_uuid", "zep_id"]

_logger = structlog.get_logger("engram_voice.memory.zep")
_T = TypeVar("_T")
_retry_after: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "zep_retry_after", default=None
)
_NOT_FOUND = 404
_DUPLICATE_STATUSES = frozenset({400, 409})
_NAMESPACE = uuid.UUID("6f1c2b1e-9d3a-5c7e-8a41-2f0e4b6d9c53")
_KNOWN_SESSIONS = 10_000
_ID_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-")
_ID_ESCAPE = "~"


def zep_id(value: str) -> str:
    """Return the Zep id of one of our ids: unchanged when URL-path safe, escaped otherwise.

    Characters of ``[A-Za-z0-9._:@-]`` stay as they are; every other character (``~``
    itself included) becomes ``~XX`` per byte of its UTF-8 form, and the whole ids ``.``
    and ``..`` (path segments a URL normalises away) become ``~2E``/``~2E~2E``. The
    mapping is injective (``~`` only ever starts an escape, so it decodes uniquely) and
    leaves Entra object ids, ``github:1234`` and ``local-user`` unchanged, so existing
    Zep data keeps its ids.
    """
    if not value:
        raise ValueError("an empty id cannot name a Zep user or session")
    if value in {".", ".."}:
        return f"{_ID_ESCAPE}2E" * len(value)
    if _ID_SAFE.issuperset(value):
        return value
    return "".join(
        char
        if char in _ID_SAFE
        else "".join(f"{_ID_ESCAPE}{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
        for char in value
    )


def message_uuid(session_id: str, message_id: str, part: int) -> str:
    """Return the stable Zep v2 uuid of one part of one turn."""
    return str(uuid.uuid5(_NAMESPACE, f"{session_id}\x1f{message_id}\x1f{part}"))


def _metadata(session: SinkSession, message: SinkMessage) -> dict[str, object]:
    metadata: dict[str, object] = {"message_id": message.message_id, "agent": session.agent}
    if message.parts > 1:
        metadata.update(part=message.part + 1, parts=message.parts)
    if message.at:
        metadata["at"] = message.at
    return metadata


async def _record_retry_after(response: httpx.Response) -> None:
    if is_transient(response.status_code):
        _retry_after.set(zep_errors.retry_after(response.headers))


def _message(exc: ApiError) -> str | None:
    body = exc.body
    message = getattr(body, "message", None)
    if message is None and isinstance(body, dict):
        message = body.get("message")
    return message if isinstance(message, str) and message else None


class ZepSink:
    """A :class:`~engram_voice.memory.sink.MemorySink` backed by Zep v2 via zep-python."""

    kind = "zep-v2"
    batch_limit = 30
    """Zep v2 accepts at most 30 messages per ``memory.add`` call."""

    def __init__(
        self, settings: ZepSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if settings.api_url is None or settings.api_key is None:
            raise ValueError("ZepSink needs ZEP_API_URL and ZEP_API_KEY")
        self._url = settings.api_url
        self.max_chars = settings.max_message_chars
        self._total = settings.timeout_seconds
        timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        self._http = httpx.AsyncClient(
            timeout=timeout,
            transport=transport,
            event_hooks={"response": [_record_retry_after]},
        )
        self._client = AsyncBaseClient(
            base_url=f"{settings.api_url}/api/v2",
            api_key=settings.api_key.reveal(),
            # Typed float, but passed straight to httpx per request: keep the connect bound.
            timeout=cast("float", timeout),
            httpx_client=self._http,
        )
        self._known: OrderedDict[str, None] = OrderedDict()

    def __repr__(self) -> str:
        return f"ZepSink(url={self.describe()['url']!r})"

    async def _call(self, what: str, fn: Callable[[], Awaitable[_T]]) -> _T:
        """Run one SDK call under a total timeout, translating failures to sink errors."""
        _retry_after.set(None)
        try:
            async with asyncio.timeout(self._total + 1.0):
                return await fn()
        except ApiError as exc:
            raise zep_errors.from_status(
                what, exc.status_code or 0, message=_message(exc), wait=_retry_after.get()
            ) from None
        except (TimeoutError, httpx.TransportError, ValueError) as exc:
            # ValueError: an unreadable answer (the SDK parses 500 bodies as JSON)
            raise zep_errors.from_transport(what, exc) from None

    async def deliver(
        self, session: SinkSession, messages: Sequence[SinkMessage], keepalive: Keepalive
    ) -> int:
        """Store the batch once: uuid dedupe, message-by-message fallback, 404 recreates."""
        await self.ensure_session(
            user_id=session.user_id, session_id=session.session_id, agent=session.agent
        )
        session_id = session.session_id
        payload = [
            Message(
                uuid=message_uuid(session_id, m.message_id, m.part),
                role_type=m.role,
                role=m.name,
                content=m.content,
                metadata=_metadata(session, m),
            )
            for m in messages
        ]
        try:
            await self.add_messages(session_id, payload)
        except SinkRejectedError as exc:
            if exc.status == _NOT_FOUND:  # the session vanished from Zep: recreate once
                self.forget_session(session_id)
                await keepalive()
                await self.ensure_session(
                    user_id=session.user_id, session_id=session_id, agent=session.agent
                )
                await self.add_messages(session_id, payload)
                return 0
            if exc.status not in _DUPLICATE_STATUSES:
                raise
            return await self._one_by_one(session_id, payload, exc, keepalive)
        return 0

    async def _one_by_one(
        self,
        session_id: str,
        payload: Sequence[Message],
        batch_error: SinkRejectedError,
        keepalive: Keepalive,
    ) -> int:
        """Fallback after a rejected batch: send each message, skipping ones already there."""
        already = 0
        for message in payload:
            await keepalive()
            if len(payload) > 1:
                try:
                    await self.add_messages(session_id, [message])
                    continue
                except SinkRejectedError as exc:
                    if exc.status not in _DUPLICATE_STATUSES:
                        raise
                    batch_error = exc
            if not await self.message_exists(session_id, str(message.uuid_)):
                raise batch_error
            already += 1
        return already

    async def ensure_session(self, *, user_id: str, session_id: str, agent: str) -> None:
        """Create the Zep user and session when missing; refuse a session of another user."""
        if session_id in self._known:
            self._known.move_to_end(session_id)
            return
        if not user_id or not session_id:
            raise SinkRejectedError("an empty user or session id cannot be stored in zep")
        owner = await self._session_owner(session_id)
        zep_user = zep_id(user_id)
        if owner is None:
            await self._ensure_user(zep_user)
            try:
                await self._call(
                    "create session",
                    lambda: self._client.memory.add_session(
                        session_id=zep_id(session_id), user_id=zep_user, metadata={"agent": agent}
                    ),
                )
            except SinkRejectedError:
                owner = await self._session_owner(session_id)  # created concurrently?
                if owner is None:
                    raise
            else:
                owner = zep_user
                _logger.info("memory.zep_session_created", session_id=session_id, agent=agent)
        # A session created before ids were mapped belongs to the same user's raw id. Only
        # an id without the escape character is taken raw: no other id maps to it.
        legacy = _ID_ESCAPE not in user_id and owner == user_id
        if owner != zep_user and not legacy:
            raise SinkRejectedError("zep session belongs to another user", status=409)
        self._known[session_id] = None
        if len(self._known) > _KNOWN_SESSIONS:
            self._known.popitem(last=False)

    async def _session_owner(self, session_id: str) -> str | None:
        """Return the Zep user id owning the session (None when it does not exist)."""
        try:
            session = await self._call(
                "get session", lambda: self._client.memory.get_session(zep_id(session_id))
            )
        except SinkRejectedError as exc:
            if exc.status == _NOT_FOUND:
                return None
            raise
        owner = getattr(session, "user_id", None)
        return owner if isinstance(owner, str) else ""

    async def _ensure_user(self, user_id: str) -> None:
        """Create the Zep user ``user_id`` (already a :func:`zep_id`) unless it exists."""
        try:
            await self._call("get user", lambda: self._client.user.get(user_id))
        except SinkRejectedError as exc:
            if exc.status != _NOT_FOUND:
                raise
        else:
            return
        try:
            await self._call("create user", lambda: self._client.user.add(user_id=user_id))
        except SinkRejectedError:
            await self._call("get user", lambda: self._client.user.get(user_id))

    async def add_messages(self, session_id: str, messages: Sequence[Message]) -> None:
        """Append messages to the Zep session in one call (at most 30)."""
        await self._call(
            "add memory",
            lambda: self._client.memory.add(session_id=zep_id(session_id), messages=messages),
        )

    async def message_exists(self, session_id: str, uuid: str) -> bool:
        """Tell whether the session already holds a message with this uuid."""
        try:
            await self._call(
                "get message",
                lambda: self._client.memory.get_session_message(zep_id(session_id), zep_id(uuid)),
            )
        except SinkRejectedError as exc:
            if exc.status == _NOT_FOUND:
                return False
            raise
        return True

    def forget_session(self, session_id: str) -> None:
        """Drop the cached knowledge that a session exists."""
        self._known.pop(session_id, None)

    def describe(self) -> dict[str, Any]:
        """Return the sink kind and its URL without credentials, path or query."""
        return {"kind": self.kind, "url": public_origin(self._url)}

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
