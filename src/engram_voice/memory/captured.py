"""Sessions the server hears itself: for them the server's transcript is authoritative.

A call set up through the service whose upstream gives the server the transcripts (the
Azure OpenAI sideband) is *captured*: its turns are enqueued server-side
(:meth:`MemoryRuntime.accept_captured`) and a browser's ``POST /memory/enrich`` for the
session stores nothing (turns the server stored count as duplicates, any other as
``not_heard``). A session whose sideband was lost for good falls back to the browser's
posts. Voice Live sessions count as captured from the first transcript their control
channel carries (if it ever does). Held in memory, per process, bounded (least recently
used sessions forgotten).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

__all__ = ["CAPTURED_UPSTREAMS", "MAX_HEARD_PER_SESSION", "MAX_SESSIONS", "CapturedSessions"]

CAPTURED_UPSTREAMS = {
    "azure-openai": "calls through the service: always (the sideband), unless it was lost",
    "voice-live": "only if its control channel carries transcripts (from the first one)",
    "sessions": "POST /realtime/sessions: never (the browser's posts are the source)",
}
"""Which sessions the server captures, as ``/status`` states it."""
MAX_SESSIONS = 50_000
"""Most sessions remembered (a call's record outlives it for the browser's last posts)."""
MAX_HEARD_PER_SESSION = 5_000
"""Most turn ids remembered per session."""


class _Session:
    __slots__ = ("active", "heard")

    def __init__(self) -> None:
        self.active = True
        self.heard: set[str] = set()


class CapturedSessions:
    """Which sessions are captured server-side, and which turn ids the server stored."""

    def __init__(self, max_sessions: int = MAX_SESSIONS) -> None:
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._max = max_sessions
        self.fallbacks = 0

    def mark(self, session_id: str, *, captured: bool) -> None:
        """Mark ``session_id`` captured (sideband up) or fallen back to the browser (lost)."""
        session = self._sessions.get(session_id)
        if session is None:
            if not captured:
                return
            session = self._sessions[session_id] = _Session()
            while len(self._sessions) > self._max:
                self._sessions.popitem(last=False)
        self._sessions.move_to_end(session_id)
        if session.active and not captured:
            self.fallbacks += 1
        session.active = captured

    def is_captured(self, session_id: str) -> bool:
        """Return True when the server's record of ``session_id`` is authoritative."""
        session = self._sessions.get(session_id)
        return session is not None and session.active

    def heard(self, session_id: str, ids: Iterable[str]) -> None:
        """Remember that the server stored the turns ``ids`` of ``session_id``."""
        session = self._sessions.get(session_id)
        if session is None:
            return
        for item_id in ids:
            if len(session.heard) >= MAX_HEARD_PER_SESSION:
                break
            session.heard.add(item_id)

    def count_heard(self, session_id: str, ids: Iterable[str]) -> int:
        """Return how many of ``ids`` the server stored for ``session_id``."""
        session = self._sessions.get(session_id)
        if session is None:
            return 0
        return sum(1 for item_id in ids if item_id in session.heard)

    def describe(self) -> dict[str, Any]:
        """Return the counts for ``/status`` (no session ids)."""
        active = sum(1 for s in self._sessions.values() if s.active)
        return {
            "which": CAPTURED_UPSTREAMS,
            "captured": active,
            "fell_back_to_browser": self.fallbacks,
            "remembered": len(self._sessions),
        }
