"""Unit-test fixtures shared across modules: the in-memory app and the Entra test tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engram_voice.app import create_app
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.settings import Settings
from tests.support.clock import FakeClock
from tests.support.entra import JwksEndpoint, SigningKey, Tenant


@pytest.fixture(name="app_env")
def fixture_app_env(tmp_path: Path) -> dict[str, str]:
    """Return a local-mode environment: no upstream is contacted, the memory worker is off."""
    return {
        "APP_ENV": "local",
        "AUTH_MODE": "none",
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "never-sent",
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "MEMORY_SQLITE_PATH": str(tmp_path / "queue.sqlite3"),
        "MEMORY_WORKER": "off",
    }


@pytest.fixture(name="client")
def fixture_client(app_env: dict[str, str]) -> Iterator[TestClient[Any]]:
    """Serve the app in memory (its lifespan runs) for the local-mode environment."""
    with TestClient(create_app(Settings.from_env(app_env))) as client:
        yield client


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return a wall clock (with a matching sleep) that moves only when a test says so."""
    return FakeClock()


@pytest.fixture(name="queue")
async def fixture_queue(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteTurnQueue]:
    """Yield an open SQLite queue in a temporary directory (closed afterwards)."""
    queue = SqliteTurnQueue(tmp_path / "q.sqlite3", clock=clock)
    await queue.open()
    yield queue
    await queue.close()


@pytest.fixture(name="key", scope="module")
def fixture_key() -> SigningKey:
    """Return the Entra test tenant's current signing key."""
    return SigningKey("key-2024")


@pytest.fixture(name="tenant")
def fixture_tenant() -> Tenant:
    """Return a fresh Entra test tenant."""
    return Tenant()


@pytest.fixture(name="endpoint")
def fixture_endpoint(key: SigningKey) -> JwksEndpoint:
    """Return the tenant's JWKS endpoint publishing the current key."""
    return JwksEndpoint(key)
