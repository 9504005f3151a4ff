"""The Zep stand-in on a loopback port, for tests that speak Zep v4 through ``zep-cloud``.

``with zep_v4_standin(tmp_path) as zep:`` serves the stand-in (both subsets, SQLite in
``tmp_path``) in this process and yields a :class:`ZepV4StandIn`: its base URL, the v4
API URL the SDK must use (``zep.api_url``, i.e. ``<base_url>/api/v4``), its API key, an
``AsyncZep`` factory (``zep.client()``), and the admin API (faults, state). Services and
workers started as processes point ``ZEP_API_URL``/``ZEP_API_KEY`` (or what the v4 sink
reads) at ``zep.base_url``/``zep.api_key``.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from zep_cloud.client import AsyncZep

from engram_voice.credentials.secret import Secret
from engram_voice.zep_standin import ZepStandinConfig, create_standin_app
from tests.support.servers import serve_app

__all__ = ["ZepV4StandIn", "zep_v4_standin"]


@dataclass(frozen=True)
class ZepV4StandIn:
    """A running stand-in: where it listens, its key, an SDK client factory, its admin API."""

    base_url: str
    api_key: str

    @property
    def api_url(self) -> str:
        """Return the base URL the v4 SDK must use (``AsyncZep(base_url=...)``)."""
        return f"{self.base_url}/api/v4"

    def client(
        self, *, api_key: str | None = None, max_retries: int = 0, timeout: float = 5.0
    ) -> AsyncZep:
        """Return an ``AsyncZep`` client for the stand-in (no SDK retries unless asked)."""
        return AsyncZep(
            api_key=api_key or self.api_key,
            base_url=self.api_url,
            max_retries=max_retries,
            timeout=timeout,
        )

    def fault(self, **plan: Any) -> None:
        """Install a fault plan (see ``engram_voice.zep_standin.faults.FaultPlan``)."""
        response = httpx.post(f"{self.base_url}/_standin/faults", json=plan, timeout=5)
        response.raise_for_status()

    def clear(self) -> None:
        """Restore normal service (and release answers held by ``store_then_timeout``)."""
        self.fault(clear=True)

    def state(self) -> dict[str, Any]:
        """Return ``/_standin/state``: stored counts, calls per endpoint, injected faults."""
        response = httpx.get(f"{self.base_url}/_standin/state", timeout=5)
        response.raise_for_status()
        state: dict[str, Any] = response.json()
        return state


@contextlib.contextmanager
def zep_v4_standin(
    directory: Path,
    *,
    api_key: str | None = None,
    v4_max_content_chars: int = 4096,
    latency_ms: int = 0,
    idempotency_ttl_s: int = 86_400,
) -> Iterator[ZepV4StandIn]:
    """Serve the stand-in on 127.0.0.1 with its SQLite file in ``directory``; stop it after.

    ``idempotency_ttl_s=0``: the stand-in forgets every ``Idempotency-Key`` at once (a Zep
    whose idempotency window has passed).
    """
    key = api_key or secrets.token_hex(16)
    config = ZepStandinConfig(
        api_key=Secret(key),
        db_path=str(directory / "zep-standin.sqlite3"),
        v4_max_content_chars=v4_max_content_chars,
        latency_ms=latency_ms,
        idempotency_ttl_s=idempotency_ttl_s,
    )
    with serve_app(create_standin_app(config), ready_path="/healthz") as url:
        standin = ZepV4StandIn(base_url=url, api_key=key)
        try:
            yield standin
        finally:
            with contextlib.suppress(httpx.HTTPError):
                standin.clear()  # release held answers so the server stops promptly
