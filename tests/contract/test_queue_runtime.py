"""The memory runtime over every queue backend: 503 under a blocked write, /status stays live."""

import asyncio

import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import StorageUnavailableError
from engram_voice.memory import MemorySettings, build_memory_runtime
from engram_voice.memory.schemas import EnrichMessage

KEYS = [("k1", Secret("k" * 64))]
BOUND = 5.0
"""A guard far above the store timeout used here (0.3 s)."""


def _settings() -> MemorySettings:
    reader = EnvReader({"MEMORY_WORKER": "off", "MEMORY_STORE_TIMEOUT_SECONDS": "0.3"})
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


@pytest.mark.parametrize("session", ["vs_known", "vs_new"])
async def test_a_blocked_write_is_a_503_while_status_still_answers(backend, clock, session):
    """While a writer holds the storage, enrich fails with 503 in time and /status is live."""
    runtime = build_memory_runtime(
        _settings(), token_keys=KEYS, queue=backend.make(clock), clock=clock
    )
    await runtime.start()
    try:
        known = runtime.verify(runtime.grant("vs_known", "alice", "elena")["token"])
        await runtime.accept(known, [EnrichMessage(id="m1", role="user", text="hi")])
        claims = runtime.verify(runtime.grant(session, "alice", "elena")["token"])
        turns = [EnrichMessage(id="m2", role="user", text="hello")]
        with backend.locked():
            with pytest.raises(StorageUnavailableError) as raised:
                async with asyncio.timeout(BOUND):
                    await runtime.accept(claims, turns)
            async with asyncio.timeout(BOUND):
                status = (await runtime.status())["queue"]
        assert raised.value.retry_after == 2
        assert status["backend"] == backend.name
        assert status["available"] is True
        assert status["depth"] == 1
        result = await runtime.accept(claims, turns)  # lock gone: stored (maybe already)
        assert result.accepted + result.duplicates == 1
    finally:
        await runtime.stop()
