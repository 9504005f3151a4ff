"""What recall reads from the stand-in's ``/api/v2``: a user's sessions and a memory context.

A Zep v2 server answers ``GET /users/{user_id}/sessions`` with the user's sessions and puts
a ``context`` (its memory context for the session: facts and entities, never the raw
messages) into ``GET /sessions/{id}/memory``. The stand-in has no fact extraction: like
the v4 context block (:mod:`.v4_context`), its context is a deterministic summary of the
session's newest ``user``/``assistant`` messages, one dated line each, only ever from that
session (so another user's data never appears). No messages: an empty context (``""``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from litestar import Request, get
from litestar.params import FromPath

from engram_voice.zep_standin.gate import gate

__all__ = ["V2_RECALL_ROUTES", "memory_context"]

CONTEXT_MESSAGES = 20
FACT_CHARS = 300


def memory_context(messages: list[dict[str, Any]]) -> str:
    """Return the session's memory context built from its stored ``messages`` (in order)."""
    said = [m for m in messages if m.get("role_type") in ("user", "assistant")]
    said = said[-CONTEXT_MESSAGES:]
    if not said:
        return ""
    lines = []
    for message in reversed(said):  # newest first: a reader that must cut keeps the latest
        text = " ".join(str(message.get("content") or "").split())
        if len(text) > FACT_CHARS:
            text = text[: FACT_CHARS - 1] + "\u2026"
        speaker = "the user" if message["role_type"] == "user" else message.get("role") or "agent"
        lines.append(f"  - ({message.get('created_at')}) {speaker} said: {text}")
    body = "\n".join(lines)
    return (
        "FACTS and ENTITIES represent relevant context to the current conversation.\n"
        "# Zep stand-in: a summary of the session's newest messages, newest first\n"
        f"<FACTS>\n{body}\n</FACTS>"
    )


@get("/api/v2/users/{user_id:str}/sessions")
async def user_sessions(
    request: Request[Any, Any, Any], user_id: FromPath[str]
) -> list[dict[str, Any]]:
    """Return the user's sessions (404 when the user is unknown)."""
    standin = await gate(request, "users.sessions")
    return standin.store.user_sessions(unquote(user_id))


V2_RECALL_ROUTES = [user_sessions]
