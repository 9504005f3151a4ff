"""Recall from a self-hosted Zep v2 server (``zep-python``): the user's latest session's context.

A read is: ``GET /users/{user}/sessions`` (asked directly: zep-python 2.0.2 types that
answer as a list of lists and cannot parse Zep's flat list) → the session updated last →
``memory.get(session_id, lastn=1)``, whose ``context`` (Zep's memory context for the
session) is used; servers without ``context`` give their ``relevant_facts`` and
``summary`` instead. The session's messages (raw transcripts) are never used. Ids go
through the sink's :func:`~engram_voice.memory.zep_sink.zep_id`, as they were stored.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast
from urllib.parse import quote

import httpx
from zep_python.base_client import AsyncBaseClient
from zep_python.core.api_error import ApiError

from engram_voice.memory.recall.reader import RecallError
from engram_voice.memory.settings import ZepSettings
from engram_voice.memory.zep_sink import zep_id
from engram_voice.netutil import public_origin

__all__ = ["ZepV2Reader", "memory_context"]

_NOT_FOUND = 404
_OK = 200


def memory_context(memory: Any) -> str | None:
    """Return the context of a zep-python ``Memory``: ``context``, else facts and summary."""
    context = getattr(memory, "context", None)
    if isinstance(context, str) and context.strip():
        return context
    lines = [
        f"- {fact.fact}"
        for fact in getattr(memory, "relevant_facts", None) or []
        if isinstance(getattr(fact, "fact", None), str) and fact.fact.strip()
    ]
    summary = getattr(getattr(memory, "summary", None), "content", None)
    if isinstance(summary, str) and summary.strip():
        lines.insert(0, f"Summary: {summary.strip()}")
    return "\n".join(lines) or None


def _latest(sessions: Any) -> str | None:
    """Return the id of the session updated (else created) last, from Zep's JSON list.

    Equal times (a clock's resolution) go to the session listed later: Zep lists a user's
    sessions in creation order.
    """
    if not isinstance(sessions, list):
        return None
    best: tuple[str, int, str] | None = None
    for position, session in enumerate(sessions):
        if not isinstance(session, dict) or not isinstance(session.get("session_id"), str):
            continue
        when = session.get("updated_at") or session.get("created_at") or ""
        key = (str(when), position, session["session_id"])
        if best is None or key > best:
            best = key
    return best[2] if best else None


class ZepV2Reader:
    """A :class:`~engram_voice.memory.recall.reader.MemoryReader` over a Zep v2 server."""

    kind = "zep-v2"

    def __init__(
        self, settings: ZepSettings, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if settings.api_url is None or settings.api_key is None:
            raise ValueError("ZepV2Reader needs ZEP_API_URL and ZEP_API_KEY")
        self._url = settings.api_url
        self._base = f"{settings.api_url}/api/v2"
        self._total = settings.timeout_seconds
        self._headers = {"Authorization": f"Api-Key {settings.api_key.reveal()}"}
        timeout = httpx.Timeout(settings.timeout_seconds, connect=settings.connect_timeout_seconds)
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._client = AsyncBaseClient(
            base_url=self._base,
            api_key=settings.api_key.reveal(),
            timeout=cast("float", timeout),
            httpx_client=self._http,
        )

    def __repr__(self) -> str:
        return f"ZepV2Reader(url={self.describe()['url']!r})"

    async def _latest_session(self, user_id: str) -> str | None:
        url = f"{self._base}/users/{quote(zep_id(user_id), safe='')}/sessions"
        response = await self._http.get(url, headers=self._headers)
        if response.status_code == _NOT_FOUND:
            return None
        if response.status_code != _OK:
            raise RecallError(f"zep answered {response.status_code}", status=response.status_code)
        return _latest(response.json())

    async def read(self, user_id: str) -> str | None:
        """Return the memory context of ``user_id``'s latest session (None: nothing known)."""
        try:
            async with asyncio.timeout(self._total + 1.0):
                session_id = await self._latest_session(user_id)
                if session_id is None:
                    return None
                memory = await self._client.memory.get(zep_id(session_id), lastn=1)
        except ApiError as exc:
            if exc.status_code == _NOT_FOUND:
                return None
            raise RecallError(f"zep answered {exc.status_code}", status=exc.status_code) from None
        except (TimeoutError, httpx.TimeoutException):
            raise RecallError("zep timed out") from None
        except httpx.TransportError as exc:
            raise RecallError(f"zep unreachable ({type(exc).__name__})") from None
        except ValueError as exc:  # an unreadable answer (the SDK parses 500 bodies as JSON)
            raise RecallError(f"unreadable answer ({type(exc).__name__})") from None
        return memory_context(memory)

    def describe(self) -> dict[str, Any]:
        """Return the reader kind and Zep's URL without credentials, path or query."""
        return {"kind": self.kind, "url": public_origin(self._url)}

    async def aclose(self) -> None:
        """Close the HTTP connections."""
        await self._http.aclose()
