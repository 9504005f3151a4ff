"""Recall at call start: cache, budget, shared circuit, late apply, per-agent switch."""

import asyncio
from collections.abc import AsyncIterator, Callable

import msgspec
import pytest

from engram_voice.agents import load_catalog
from engram_voice.memory.circuit import CircuitBreaker
from engram_voice.memory.recall import MemoryRecall, RecallError, RecallSettings
from engram_voice.memory.recall.block import OPEN_TAG
from tests.support.clock import FakeClock
from tests.support.recall import FakeReader, FakeSession

ELENA = load_catalog().get("elena")
ALICE_MEMORY = "Alice has a dog called Rex and is learning Portuguese."


@pytest.fixture(name="reader")
def fixture_reader() -> FakeReader:
    """Return a reader that knows Alice (and nobody else)."""
    return FakeReader(contexts={"alice": ALICE_MEMORY})


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return a monotonic clock that moves only when the test says so."""
    return FakeClock(1000.0)


@pytest.fixture(name="circuit")
def fixture_circuit(clock: FakeClock) -> CircuitBreaker:
    """Return a breaker that opens after two failures for 30 s."""
    return CircuitBreaker(failures=2, cooldown=30.0, clock=clock)


@pytest.fixture(name="make_recall")
async def fixture_make_recall(
    reader: FakeReader, circuit: CircuitBreaker, clock: FakeClock
) -> AsyncIterator[Callable[..., MemoryRecall]]:
    """Build recalls over the fake reader and close them afterwards."""
    made: list[MemoryRecall] = []

    def make(**options: object) -> MemoryRecall:
        settings = msgspec.structs.replace(RecallSettings(budget_ms=50), **options)
        recall = MemoryRecall(reader, settings, circuit=circuit, read_timeout=5.0, clock=clock)
        made.append(recall)
        return recall

    yield make
    for recall in made:
        await recall.aclose()


async def test_a_cold_read_within_the_budget_puts_the_memory_into_the_instructions(
    make_recall, reader
):
    """A read that answers in time is a miss, and the agent's instructions carry the block."""
    recall = make_recall()
    recalled = await recall.recall("alice", ELENA)
    assert recalled.outcome == "miss"
    assert recalled.agent.instructions.startswith(ELENA.instructions)
    assert f"{OPEN_TAG}\n{ALICE_MEMORY}\n</user_memory>" in recalled.agent.instructions
    assert reader.reads == ["alice"]


async def test_a_user_zep_knows_nothing_about_gets_the_plain_agent(make_recall):
    """A different user's session carries none of Alice's memory (no block at all)."""
    recall = make_recall()
    await recall.recall("alice", ELENA)
    recalled = await recall.recall("bob", ELENA)
    assert recalled.agent == ELENA
    assert "Rex" not in recalled.agent.instructions


async def test_a_second_recall_is_served_from_the_cache_until_it_expires(
    make_recall, reader, clock
):
    """Within MEMORY_RECALL_CACHE_SECONDS Zep is not read again; after it, it is."""
    recall = make_recall(cache_seconds=60.0)
    await recall.recall("alice", ELENA)
    clock.advance(59)
    assert (await recall.recall("alice", ELENA)).outcome == "hit"
    assert reader.reads == ["alice"]
    clock.advance(1)
    assert (await recall.recall("alice", ELENA)).outcome == "miss"
    assert reader.reads == ["alice", "alice"]


async def test_the_cache_keeps_only_the_most_recently_used_users(make_recall, reader):
    """Past MEMORY_RECALL_CACHE_USERS the least recently used user is read again."""
    recall = make_recall(cache_users=10)
    users = [f"u{i}" for i in range(11)]
    for user in users:
        await recall.recall(user, ELENA)
    assert recall.describe()["cache"]["users"] == 10
    await recall.recall("u0", ELENA)
    assert reader.reads.count("u0") == 2


@pytest.mark.parametrize("budget_ms", [0, 1, 20])
async def test_a_read_that_misses_the_budget_does_not_hold_the_setup(
    make_recall, reader, budget_ms
):
    """A slow Zep: the setup goes on without memory while the read fills the cache."""
    reader.gate = asyncio.Event()
    recall = make_recall(budget_ms=budget_ms)
    recalled = await recall.recall("alice", ELENA)
    assert (recalled.outcome, recalled.agent) == ("timeout", ELENA)
    await asyncio.wait_for(reader.started.wait(), timeout=5)  # the read goes on, unanswered
    reader.gate.set()
    await _settled(recall)
    assert ALICE_MEMORY in (await recall.recall("alice", ELENA)).agent.instructions


async def test_a_late_read_is_applied_to_the_live_call_with_session_update(make_recall, reader):
    """After a timeout the memory reaches the connected call once the read answers."""
    reader.gate = asyncio.Event()
    recall = make_recall(budget_ms=0)
    recalled = await recall.recall("alice", ELENA)
    session = FakeSession()
    recall.apply_late("alice", recalled, session)
    reader.gate.set()
    await asyncio.wait_for(session.updated.wait(), timeout=5)
    assert session.updates[0].startswith(ELENA.instructions)
    assert ALICE_MEMORY in session.updates[0]
    assert recall.describe()["outcomes"]["late_applied"] == 1


async def test_nothing_is_applied_late_when_zep_knows_nothing(make_recall, reader):
    """A late read without memory sends no session.update."""
    reader.gate = asyncio.Event()
    recall = make_recall(budget_ms=0)
    recalled = await recall.recall("bob", ELENA)
    session = FakeSession()
    recall.apply_late("bob", recalled, session)
    reader.gate.set()
    await _settled(recall)
    assert session.updates == []


async def test_an_open_circuit_means_the_reader_is_never_called(make_recall, reader, circuit):
    """Zep down (circuit open): recall reads and awaits nothing, and adds no memory."""
    circuit.record_failure()
    circuit.record_failure()
    assert circuit.state == "open"
    recall = make_recall(budget_ms=5000)
    recalled = await recall.recall("alice", ELENA)
    assert (recalled.outcome, recalled.agent) == ("circuit_open", ELENA)
    assert reader.reads == []
    recall.refresh("alice")
    assert reader.reads == []


async def test_failed_reads_open_the_shared_circuit_and_then_stop_reading(
    make_recall, reader, circuit, clock
):
    """Two failures open the breaker; recall then stops reading until the cooldown ends."""
    reader.failures = [RecallError("zep answered 503", status=503) for _ in range(2)]
    recall = make_recall()
    assert (await recall.recall("alice", ELENA)).outcome == "error"
    assert (await recall.recall("alice", ELENA)).outcome == "error"
    assert circuit.state == "open"
    assert (await recall.recall("alice", ELENA)).outcome == "circuit_open"
    assert len(reader.reads) == 2
    assert recall.describe()["last_error"] == "zep answered 503"
    clock.advance(30)  # half-open: one probe; its success closes the breaker
    assert (await recall.recall("alice", ELENA)).outcome == "miss"
    assert circuit.state == "closed"


async def test_an_agent_that_opted_out_never_reads_memory(make_recall, reader):
    """memory_recall = false in the catalog: the agent's sessions never carry memory."""
    agent = msgspec.structs.replace(ELENA, memory_recall=False)
    recall = make_recall()
    recalled = await recall.recall("alice", agent)
    assert (recalled.outcome, recalled.agent) == ("off", agent)
    assert reader.reads == []


async def test_concurrent_recalls_of_one_user_share_one_read(make_recall, reader):
    """Ten setups at once for one cold user cost Zep one read."""
    reader.gate = asyncio.Event()
    recall = make_recall(budget_ms=5000)
    pending = [asyncio.ensure_future(recall.recall("alice", ELENA)) for _ in range(10)]
    await asyncio.wait_for(reader.started.wait(), timeout=5)
    reader.gate.set()
    results = await asyncio.gather(*pending)
    assert {r.outcome for r in results} == {"miss"}
    assert reader.reads == ["alice"]


async def test_the_worker_hook_refreshes_a_cached_user(make_recall, reader):
    """After delivery the worker's refresh replaces what the cache holds for that user."""
    recall = make_recall()
    await recall.recall("alice", ELENA)
    reader.contexts["alice"] = "Alice moved to Lisbon."
    recall.refresh("alice")
    await _settled(recall)
    recalled = await recall.recall("alice", ELENA)
    assert recalled.outcome == "hit"
    assert "Lisbon" in recalled.agent.instructions
    assert "Rex" not in recalled.agent.instructions


async def test_status_shows_recall_health_without_memory_text_or_user_ids(make_recall):
    """/status's recall section: reader, budget, circuit, cache, outcomes; no text, no id."""
    recall = make_recall()
    await recall.recall("alice", ELENA)
    described = recall.describe()
    assert described["budget_ms"] == 50
    assert described["circuit"] == "closed"
    assert described["outcomes"] == {"miss": 1}
    assert "Rex" not in repr(described)
    assert "alice" not in repr(described)


async def test_close_ends_background_reads_and_closes_the_reader(make_recall, reader):
    """Aclose cancels a read still running and closes the reader; later recalls read nothing."""
    reader.gate = asyncio.Event()
    recall = make_recall(budget_ms=0)
    await recall.recall("alice", ELENA)
    await recall.aclose()
    assert reader.closed
    assert recall.describe()["reads_in_flight"] == 0
    assert (await recall.recall("bob", ELENA)).outcome == "circuit_open"


async def _settled(recall: MemoryRecall) -> None:
    """Wait (bounded) until the recall has no read or late apply running."""
    for _ in range(200):
        if not recall._tasks:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("recall's background work did not settle")


async def test_a_half_open_circuit_lets_one_probe_read_at_a_time(
    make_recall, reader, circuit, clock
):
    """After the cooldown one read probes Zep; other cold users wait for its verdict."""
    circuit.record_failure()
    circuit.record_failure()
    clock.advance(30)
    assert circuit.state == "half_open"
    reader.gate = asyncio.Event()
    recall = make_recall(budget_ms=0)
    assert (await recall.recall("alice", ELENA)).outcome == "timeout"  # the probe
    assert (await recall.recall("bob", ELENA)).outcome == "circuit_open"
    reader.gate.set()
    await _settled(recall)
    assert circuit.state == "closed"
    assert reader.reads == ["alice"]


async def test_a_delivery_during_a_read_makes_recall_read_again(make_recall, reader):
    """Turns delivered while a read runs are not lost to it: the user is read once more."""
    reader.gate = asyncio.Event()
    recall = make_recall(budget_ms=0)
    await recall.recall("alice", ELENA)
    await asyncio.wait_for(reader.started.wait(), timeout=5)
    reader.contexts["alice"] = "Alice moved to Lisbon."
    recall.refresh("alice")  # the worker delivered while the first read was out
    reader.gate.set()
    await _settled(recall)
    assert reader.reads == ["alice", "alice"]
    assert "Lisbon" in (await recall.recall("alice", ELENA)).agent.instructions
