"""Recall from Zep Cloud v4 (``zep-cloud`` 4.x): the context block of the user's latest thread.

Zep v4 addresses users and threads by UUIDs it generates, so a read is: our user id → the
Zep user (``user.lookup(user_id=…)``, cached: a user's UUID never changes) → the user's
most recently updated thread (``thread.list(user_uuid=…, order_by="updated_at")``) →
``thread.get_context(thread_uuid)``, Zep's context block for the user (facts and entities
from the user's graph; never the thread's raw messages). The first two steps sit behind a
:data:`ThreadLocator`, one small function the sink's state store (which keeps the UUIDs it
created next to our ids) can replace. The SDK's own retries are off (``max_retries=0``):
recall has a time budget, and a failed read is simply a miss.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from zep_cloud.client import AsyncZep
from zep_cloud.core.api_error import ApiError

from engram_voice.memory.recall.reader import RecallError
from engram_voice.memory.settings import ZepSettings
from engram_voice.memory.zep_cloud_wire import zep_user_id
from engram_voice.netutil import public_origin

__all__ = ["SdkThreadLocator", "ThreadLocator", "ZepV4Reader"]

ThreadLocator = Callable[[str], Awaitable[str | None]]
"""Our user id → the UUID of that user's latest Zep thread (None: no user or no thread)."""

_NOT_FOUND = 404
_KNOWN_USERS = 10_000


class SdkThreadLocator:
    """Finds a user's latest thread through the SDK; caches user UUIDs (they never change).

    ``external_id`` maps our user id to the ``user_id`` the sink gave Zep (the v4 sink's own
    mapping; identity until it is wired here).
    """

    def __init__(
        self, client: AsyncZep, *, external_id: Callable[[str], str] = lambda user_id: user_id
    ) -> None:
        self._client = client
        self._external = external_id
        self._users: OrderedDict[str, str] = OrderedDict()

    async def __call__(self, user_id: str) -> str | None:
        """Return the UUID of ``user_id``'s most recently updated thread, if any."""
        user_uuid = self._users.get(user_id)
        if user_uuid is None:
            user = await self._client.user.lookup(user_id=self._external(user_id))
            user_uuid = user.uuid_
            if not user_uuid:
                return None
            self._users[user_id] = user_uuid
            if len(self._users) > _KNOWN_USERS:
                self._users.popitem(last=False)
        else:
            self._users.move_to_end(user_id)
        page = await self._client.thread.list(
            user_uuid=user_uuid, order_by="updated_at", order="desc", page_size=1
        )
        threads = page.items or []
        return threads[0].uuid_ if threads and threads[0].uuid_ else None


class ZepV4Reader:
    """A :class:`~engram_voice.memory.recall.reader.MemoryReader` over Zep Cloud v4."""

    kind = "zep-v4"

    def __init__(
        self,
        settings: ZepSettings,
        *,
        locate: ThreadLocator | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if settings.api_url is None or settings.api_key is None:
            raise ValueError("ZepV4Reader needs ZEP_API_URL and ZEP_API_KEY")
        self._url = settings.api_url
        self._total = settings.timeout_seconds
        timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._client = AsyncZep(
            base_url=f"{settings.api_url}/api/v4",
            api_key=settings.api_key.reveal(),
            timeout=settings.timeout_seconds,
            max_retries=0,
            httpx_client=self._http,
        )
        # The v4 sink names Zep users with zep_user_id (ids over 500 characters hashed).
        self._locate = locate or SdkThreadLocator(self._client, external_id=zep_user_id)

    def __repr__(self) -> str:
        return f"ZepV4Reader(url={self.describe()['url']!r})"

    async def read(self, user_id: str) -> str | None:
        """Return the context block of ``user_id``'s latest thread (None: Zep knows nothing)."""
        try:
            async with asyncio.timeout(self._total + 1.0):
                thread_uuid = await self._locate(user_id)
                if thread_uuid is None:
                    return None
                answer = await self._client.thread.get_context(thread_uuid)
        except ApiError as exc:
            if exc.status_code == _NOT_FOUND:
                return None
            raise RecallError(f"zep answered {exc.status_code}", status=exc.status_code) from None
        except (TimeoutError, httpx.TimeoutException):
            raise RecallError("zep timed out") from None
        except httpx.TransportError as exc:
            raise RecallError(f"zep unreachable ({type(exc).__name__})") from None
        except ValueError as exc:  # an unreadable answer
            raise RecallError(f"unreadable answer ({type(exc).__name__})") from None
        context = answer.context
        return context if isinstance(context, str) and context.strip() else None

    def describe(self) -> dict[str, Any]:
        """Return the reader kind and Zep's URL without credentials, path or query."""
        return {"kind": self.kind, "url": public_origin(self._url)}

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
