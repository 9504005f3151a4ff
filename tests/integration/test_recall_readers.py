"""One contract for both recall readers (Zep v4, Zep v2), each through its real SDK.

Both run against the Zep stand-in, seeded through the same SDK a sink of that API uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.memory.recall import MemoryReader, RecallError
from engram_voice.memory.recall.block import memory_block
from engram_voice.memory.recall.zep_v2 import ZepV2Reader
from engram_voice.memory.recall.zep_v4 import ZepV4Reader
from engram_voice.memory.settings import ZepSettings
from tests.support.recall_seed import seed_v2, seed_v4
from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin

Seed = Callable[[str, list[str]], Awaitable[None]]


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the Zep stand-in (both API subsets) on loopback."""
    with zep_v4_standin(tmp_path) as zep:
        yield zep


def _settings(zep: ZepV4StandIn, api: str, *, key: str | None = None) -> ZepSettings:
    return ZepSettings(
        api_url=zep.base_url,
        api_key=Secret(key or zep.api_key),
        timeout_seconds=0.5,
        connect_timeout_seconds=0.5,
        max_message_chars=4096,
        api=api,
    )


def _reader(settings: ZepSettings) -> MemoryReader:
    return ZepV4Reader(settings) if settings.api == "v4" else ZepV2Reader(settings)


@pytest.fixture(name="api", params=["v4", "v2"])
def fixture_api(request: pytest.FixtureRequest) -> str:
    """Run each contract test against the v4 and the v2 reader."""
    api: str = request.param
    return api


@pytest.fixture(name="reader")
async def fixture_reader(zep: ZepV4StandIn, api: str) -> AsyncIterator[MemoryReader]:
    """Yield the reader of ``api`` pointed at the stand-in."""
    reader = _reader(_settings(zep, api))
    yield reader
    await reader.aclose()


@pytest.fixture(name="seed")
def fixture_seed(zep: ZepV4StandIn, api: str) -> Seed:
    """Return how a sink of ``api`` would store a user's turns (one new session/thread each)."""
    count = iter(range(1_000))

    async def seed(user_id: str, said: list[str]) -> None:
        if api == "v4":
            await seed_v4(zep.base_url, zep.api_key, user_id, said)
        else:
            await seed_v2(zep.base_url, zep.api_key, user_id, f"vs_{next(count)}", said)

    return seed


async def test_the_reader_returns_what_zep_knows_about_the_user(reader, seed):
    """Zep's context for a user who talked before carries what they said."""
    await seed("alice", ["My dog is called Rex.", "I am learning Portuguese."])
    context = await reader.read("alice")
    assert context is not None
    assert "Rex" in context
    assert "Portuguese" in context


async def test_another_users_memory_never_appears(reader, seed):
    """Bob's context holds nothing of Alice's, and a user Zep never saw has none."""
    await seed("alice", ["My dog is called Rex."])
    await seed("bob", ["I play the cello."])
    context = await reader.read("bob")
    assert context is not None
    assert "cello" in context
    assert "Rex" not in context
    assert await reader.read("carol") is None


async def test_the_latest_session_is_read(reader, seed):
    """After a second conversation the context covers the latest one."""
    await seed("alice", ["My dog is called Rex."])
    await seed("alice", ["We moved to Lisbon last week."])
    context = await reader.read("alice")
    assert context is not None
    assert "Lisbon" in context


@pytest.mark.parametrize(
    "user_id", ["a/b", "x?y=1#z", "..", "Zoë", "github:1234", "u" * 512, "sha256:not-a-hash"]
)
async def test_any_valid_user_id_is_read_as_it_was_stored(reader, seed, user_id):
    """Ids with URL-special characters, or too long for Zep v4, address their own user."""
    marker = f"marker-{len(user_id)}-{user_id[:3]!r}"
    await seed(user_id, [f"I am {marker}."])
    await seed("someone-else", ["I am nobody you know."])
    context = await reader.read(user_id)
    assert context is not None
    assert marker in context
    assert "nobody you know" not in context


@pytest.mark.parametrize("mode", ["down", "error", "throttle"])
async def test_a_failing_zep_raises_recall_error(reader, seed, zep, mode):
    """A Zep answering 503, 500 or 429 is a RecallError (the breaker counts it), not empty."""
    await seed("alice", ["My dog is called Rex."])
    zep.fault(mode=mode)
    with pytest.raises(RecallError):
        await reader.read("alice")


async def test_a_slow_zep_is_cut_off_by_the_timeout(reader, seed, zep):
    """A Zep slower than ZEP_TIMEOUT_SECONDS is a RecallError, never a hang."""
    await seed("alice", ["My dog is called Rex."])
    zep.fault(latency_ms=3000)
    with pytest.raises(RecallError) as raised:
        await reader.read("alice")
    assert "timed out" in raised.value.reason


async def test_a_refused_key_is_a_recall_error_without_the_key(zep, api, seed):
    """A wrong ZEP_API_KEY is a RecallError whose reason does not contain the key."""
    await seed("alice", ["My dog is called Rex."])
    reader = _reader(_settings(zep, api, key="wrong-key-0123456789"))
    try:
        with pytest.raises(RecallError) as raised:
            await reader.read("alice")
    finally:
        await reader.aclose()
    assert raised.value.status == 401
    assert "wrong-key" not in raised.value.reason
    assert "wrong-key" not in repr(reader)


async def test_what_the_user_said_last_survives_the_cap(reader, seed):
    """With more history than the data block holds, the newest memory is the part kept."""
    for i in range(15):
        await seed("alice", [f"Old story number {i}: " + "and then " * 20])
    await seed("alice", ["I moved to Lisbon last spring."])
    block = memory_block(await reader.read("alice"), max_chars=2000)
    assert block is not None
    assert "Lisbon" in block
