"""A local managed identity endpoint (App Service protocol) for azure-identity in a subprocess.

``ManagedIdentityCredential`` talks to ``IDENTITY_ENDPOINT`` with the ``X-IDENTITY-HEADER``
header when both variables are set (App Service, Container Apps); pointing them here lets a
service or ``engram-voice check`` process obtain tokens with the production code path, or
see the identity hang (a misconfigured identity) so the credential timeout is exercised.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tests.support.servers import serve_app

__all__ = ["ManagedIdentityEndpoint", "managed_identity_endpoint"]

HANG_LIMIT_SECONDS = 30.0
_HANG_POLL_SECONDS = 0.02

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class ManagedIdentityEndpoint:
    """Issues ``token`` for any resource, or hangs while ``hang`` is set."""

    token: str = field(default_factory=lambda: f"mi-token-{secrets.token_hex(8)}")
    header: str = field(default_factory=lambda: secrets.token_hex(8))
    hang: bool = False
    url: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)

    def env(self, client_id: str = "11111111-2222-3333-4444-555555555555") -> dict[str, str]:
        """Return the variables that send azure-identity's managed identity here."""
        return {
            "IDENTITY_ENDPOINT": self.url,
            "IDENTITY_HEADER": self.header,
            "AZURE_CLIENT_ID": client_id,
        }

    async def __call__(self, scope: dict[str, Any], _receive: Receive, send: Send) -> None:
        """Answer one token request (ASGI)."""
        if scope["type"] != "http":
            return
        query = {k: v[0] for k, v in parse_qs(scope.get("query_string", b"").decode()).items()}
        self.requests.append(query)
        deadline = time.monotonic() + HANG_LIMIT_SECONDS
        # ``hang`` is flipped from the test's thread; a bounded poll is the thread-safe wait.
        while self.hang and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_HANG_POLL_SECONDS)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if headers.get("x-identity-header") != self.header:
            status, body = 401, {"error": "unauthorized", "error_description": "bad header"}
        else:
            status, body = (
                200,
                {
                    "access_token": self.token,
                    "expires_on": str(int(time.time()) + 3600),
                    "resource": query.get("resource", ""),
                    "token_type": "Bearer",
                    "client_id": query.get("client_id", ""),
                },
            )
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})


@contextmanager
def managed_identity_endpoint(*, hang: bool = False) -> Iterator[ManagedIdentityEndpoint]:
    """Serve a managed identity endpoint on loopback for the duration of the block."""
    endpoint = ManagedIdentityEndpoint(hang=hang)
    with serve_app(endpoint) as base:
        endpoint.url = f"{base}/msi/token"
        try:
            yield endpoint
        finally:
            endpoint.hang = False
