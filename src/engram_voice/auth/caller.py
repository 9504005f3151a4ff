"""Who is calling: the :class:`Caller` every authenticator returns, and the local no-op one."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Protocol

import msgspec

__all__ = [
    "MAX_USER_ID_CHARS",
    "Authenticator",
    "Caller",
    "NoAuthenticator",
    "lower_headers",
    "user_id_problem",
]

MAX_USER_ID_CHARS = 512
"""The longest user id any auth mode accepts (an EasyAuth id plus its ``idp:`` prefix)."""

# C0 controls and DEL (U+0000 breaks PostgreSQL, line breaks forge log lines) and lone
# surrogates (not encodable as UTF-8). C1 controls stay allowed: a UTF-8 header value read
# as Latin-1, as HTTP servers hand header values over, is full of them.
_REFUSED = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def user_id_problem(user_id: str) -> str | None:
    """Return why ``user_id`` cannot name a user, or None when it can.

    The one rule for every auth mode: 1 to ``MAX_USER_ID_CHARS`` characters, no
    surrounding whitespace, no C0 control character or DEL, no lone surrogate. Everything else
    (``/``, ``?``, ``#``, ``%``, spaces, any other Unicode) is a valid id; the memory
    sink maps it to what its store accepts.
    """
    if not user_id or user_id != user_id.strip():
        return "it is empty or has surrounding whitespace"
    if len(user_id) > MAX_USER_ID_CHARS:
        return f"it is longer than {MAX_USER_ID_CHARS} characters"
    if _REFUSED.search(user_id):
        return "it contains a control character or a lone surrogate"
    return None


class Caller(msgspec.Struct, frozen=True):
    """An authenticated caller: a stable user id (memory is keyed by it) and a display name."""

    user_id: str
    display_name: str | None
    auth_mode: str


class Authenticator(Protocol):
    """Turns request headers into a :class:`Caller` or raises a domain error."""

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """Return the caller, or raise AuthenticationError (401) or ForbiddenError (403)."""
        ...


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Return ``headers`` with lower-case names, whatever mapping type carried them."""
    return {name.lower(): value for name, value in headers.items()}


class NoAuthenticator:
    """Accepts every request as one fixed local user (``AUTH_MODE=none``, development only)."""

    def __init__(self, user_id: str) -> None:
        self._caller = Caller(user_id=user_id, display_name=None, auth_mode="none")

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:  # noqa: ARG002
        """Return the configured local user without looking at the request."""
        return self._caller
