"""The capture process gets none of the service's secrets in its environment."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engram_voice.realtime.calls.capture_process import CaptureProcess
from tests.support.capture_hosts import RotatingKeys

SECRETS = {
    "AZURE_OPENAI_API_KEY": "azkey-0123456789abcdef0123456789ab",
    "VOICELIVE_API_KEY": "vlkey-0123456789abcdef0123456789ab",
    "ZEP_API_KEY": "zepkey-0123456789abcdef",
    "AZURE_CLIENT_SECRET": "client-secret-value-0123",
    "MEMORY_TOKEN_KEYS": "k1:tokenkeymaterial0123456789",
    "AUTH_SHARED_PASSWORD": "hunter2-but-longer",
    "MEMORY_POSTGRES_DSN": "postgresql://engram:pgpass-0123@db.internal:5432/engram",
    "SOME_SERVICE_URL": "https://user:urlpass-0123@example.invalid/x",
}


@pytest.mark.parametrize("name", sorted(SECRETS))
async def test_no_secret_of_the_service_reaches_the_capture_process_environment(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    """A key, a password, a token key or a URL with a password stays in the service only."""
    value = SECRETS[name]
    monkeypatch.setenv(name, value)
    monkeypatch.setenv("ENGRAM_PLAIN_SETTING", "kept")
    process = CaptureProcess(credentials=RotatingKeys())  # type: ignore[arg-type]
    try:
        assert await process.start(wait=30)
        pid = process.describe()["pid"]
        raw = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
        environ = raw.decode(errors="replace")
    finally:
        await process.aclose()
    assert value not in environ
    assert "ENGRAM_PLAIN_SETTING=kept" in environ.split("\0")
