"""The mint deadline holds across the 401 re-read: no retry may run without a timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.credentials.sources import UpstreamCredential
from engram_voice.errors import UpstreamTimeoutError
from engram_voice.realtime.endpoints import EndpointPool
from engram_voice.realtime.upstream import UpstreamMinter
from tests.support.servers import serve_app

HANG_LIMIT_SECONDS = 10.0


class RotatingKeys:
    """A key source whose re-read after a 401 is slow (a sluggish Key Vault) but succeeds."""

    kind = "key-vault"

    def __init__(self, reread_seconds: float) -> None:
        self.reread_seconds = reread_seconds
        self.version = 1

    async def start(self) -> None:
        """Nothing to fetch up front."""

    async def get(self) -> UpstreamCredential:
        """Return the current key."""
        return UpstreamCredential(
            header="api-key", secret=Secret(f"key-{self.version}"), kind=self.kind
        )

    async def invalidate(self, used: UpstreamCredential) -> bool:  # noqa: ARG002 - protocol
        """Re-read slowly and report a new key."""
        await asyncio.sleep(self.reread_seconds)
        self.version += 1
        return True

    async def check(self) -> None:
        """Report the source usable (it always is)."""

    def describe(self) -> dict[str, Any]:
        """Describe nothing secret."""
        return {"kind": self.kind}

    async def aclose(self) -> None:
        """Nothing to close."""


class RefuseThenHang:
    """Azure stand-in: 401 to the first key, then hangs (bounded) for any other."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: dict[str, Any], _receive: Any, send: Any) -> None:
        """Answer one request (ASGI)."""
        if scope["type"] != "http":
            return
        self.requests += 1
        headers = dict(scope["headers"])
        if headers.get(b"api-key") == b"key-1":
            status = 401
        else:
            await asyncio.sleep(HANG_LIMIT_SECONDS)
            status = 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


async def test_a_401_whose_reread_outlasts_the_deadline_ends_as_a_timeout() -> None:
    """When the key re-read uses up the budget, the mint fails as 504 at once, never hangs."""
    azure = RefuseThenHang()
    with serve_app(azure) as base:
        async with aiohttp.ClientSession() as session:
            minter = UpstreamMinter(
                session=session,
                credentials=RotatingKeys(reread_seconds=0.6),
                pool=EndpointPool((base,), failure_threshold=3, cooldown_seconds=30),
                request_timeout=5.0,
                connect_timeout=1.0,
                deadline=0.5,
            )
            with pytest.raises(UpstreamTimeoutError):
                async with asyncio.timeout(HANG_LIMIT_SECONDS - 2):  # a hang fails the test
                    await minter.mint({"session": {"type": "realtime"}})
    assert azure.requests == 1, "no second request may be sent without any budget left"
