"""Helpers for calls set up through the service: a caller per user and the browser's side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from engram_voice.auth.caller import Caller, lower_headers
from engram_voice.errors import AuthenticationError
from tests.conftest import Emulator
from tests.support.polling import async_poll_until

__all__ = [
    "MINIMAL_OFFER",
    "HeaderUsers",
    "calls_over",
    "delete_call",
    "emulator_call",
    "emulator_call_ids",
    "post_call",
]

MINIMAL_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\n"
)
"""An offer with the right shape but no ICE/DTLS: enough to pass the service's own checks."""


class HeaderUsers:
    """A stand-in authenticator: the caller is whoever ``X-Test-User`` names (401 without)."""

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """Return the caller named by ``X-Test-User``."""
        user = lower_headers(headers).get("x-test-user")
        if not user:
            raise AuthenticationError("X-Test-User is missing")
        return Caller(user_id=user, display_name=None, auth_mode="test")


async def post_call(
    url: str, offer: str, *, agent: str = "elena", user: str = "alice", **extra: object
) -> httpx.Response:
    """POST /realtime/calls as ``user`` with ``offer`` for ``agent``."""
    async with httpx.AsyncClient(timeout=20) as http:
        return await http.post(
            f"{url}/realtime/calls",
            json={"agent": agent, "sdp_offer": offer, **extra},
            headers={"X-Test-User": user},
        )


async def delete_call(url: str, call_id: str, *, user: str = "alice") -> httpx.Response:
    """DELETE /realtime/calls/{call_id} as ``user``."""
    async with httpx.AsyncClient(timeout=20) as http:
        return await http.delete(f"{url}/realtime/calls/{call_id}", headers={"X-Test-User": user})


def emulator_call_ids(emulator: Emulator) -> set[str]:
    """Return the ids of every call the emulator remembers."""
    calls = emulator.state()["calls"]
    assert isinstance(calls, list)
    return {c["call_id"] for c in calls}


def emulator_call(emulator: Emulator, call_id: str) -> dict[str, Any]:
    """Return the emulator's record of its call ``call_id``."""
    calls = emulator.state()["calls"]
    assert isinstance(calls, list)
    found: dict[str, Any] = next(c for c in calls if c["call_id"] == call_id)
    return found


async def calls_over(
    url: str,
    *,
    started: int,
    timeout: float = 30.0,  # noqa: ASYNC109 - a poll bound, like async_poll_until's
) -> dict[str, Any]:
    """Poll ``/status`` (bounded) until no call is active or ending; return its ``calls``.

    Every poll checks that each of the ``started`` calls is counted exactly once: active,
    ending (its hang-up under way) or in ``ended_by_reason``.
    """

    def over() -> dict[str, Any] | None:
        calls: dict[str, Any] = httpx.get(f"{url}/status", timeout=10).json()["calls"]
        counted = calls["active"] + calls["ending"] + sum(calls["ended_by_reason"].values())
        assert counted == started, calls
        return calls if calls["active"] == calls["ending"] == 0 else None

    return await async_poll_until(over, timeout=timeout, what="every call ended and hung up")
