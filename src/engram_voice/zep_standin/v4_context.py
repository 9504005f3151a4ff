"""The stand-in's context block: a deterministic summary of what one user said.

Zep Cloud builds a thread's context block from the owning *user's* graph (facts and
entities extracted from every thread of that user). The stand-in has no graph; it lists
the newest :data:`CONTEXT_MESSAGES` ``user``/``assistant`` messages of that user, across
all of the user's threads, as dated fact lines (each cut at :data:`FACT_CHARS`). Only the
user who owns the thread contributes, so another user's data never appears. A user with
no such messages gets an empty context (``""``).
"""

from __future__ import annotations

from typing import Any

from engram_voice.zep_standin.v4_store import V4Store

__all__ = ["CONTEXT_MESSAGES", "FACT_CHARS", "context_block"]

CONTEXT_MESSAGES = 20
FACT_CHARS = 300
_ROLES = frozenset({"user", "assistant"})


def _fact(message: dict[str, Any]) -> str:
    speaker = message["name"] or ("the user" if message["role"] == "user" else "the assistant")
    text = " ".join(message["content"].split())
    if len(text) > FACT_CHARS:
        text = text[: FACT_CHARS - 1] + "\u2026"
    return f"  - ({message['reference_time']}) {speaker} ({message['role']}) said: {text}"


def context_block(store: V4Store, user_uuid: str) -> str:
    """Return the context block for ``user_uuid``: its newest messages as dated facts."""
    messages = store.user_messages(user_uuid, roles=_ROLES, last=CONTEXT_MESSAGES)
    if not messages:
        return ""
    # Newest first, as a recall summary should read: a reader that must cut keeps the latest.
    facts = "\n".join(_fact(message) for message in reversed(messages))
    return (
        "FACTS and ENTITIES represent relevant context to the current conversation.\n"
        "# These are facts from earlier conversations with this user (Zep stand-in: "
        f"a summary of the newest {len(messages)} stored messages, newest first)\n"
        "# format: FACT (reference time) speaker (role) said: content\n"
        f"<FACTS>\n{facts}\n</FACTS>"
    )
