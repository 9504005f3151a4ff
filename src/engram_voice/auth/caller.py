"""Who is calling: the :class:`Caller` every authenticator returns, and the local no-op one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import msgspec

__all__ = ["Authenticator", "Caller", "NoAuthenticator", "lower_headers"]


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
