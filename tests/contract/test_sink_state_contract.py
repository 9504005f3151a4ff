"""The sink state contract: what every SinkStateStore (SQLite file, PostgreSQL) guarantees."""

from __future__ import annotations

import asyncio
import random

import pytest

from engram_voice.memory.sink import SinkMessage
from engram_voice.memory.sink_state import PendingBatch, SinkStateStore
from tests.contract.conftest import StateBackend


def _message(mid: str, part: int = 0, content: str = "hi") -> SinkMessage:
    return SinkMessage(
        message_id=mid,
        part=part,
        parts=part + 1,
        role="user",
        name="user",
        content=content,
        at=None,
        accepted_at=1.0,
    )


async def test_ids_batches_and_delivered_records_survive_a_reopen(state_backend: StateBackend):
    """What the store keeps is durable: a new instance on the same storage reads it back."""
    state = state_backend.make()
    await state.open()
    assert await state.put_id("user", "alice", "u-1", now=1.0) == "u-1"
    batch = PendingBatch(key="k1", target="t-1", messages=[_message("a"), _message("b", 1)])
    await state.begin("vs_1", batch, now=1.0)
    await state.close()
    state = state_backend.make()
    await state.open()
    try:
        assert await state.get_id("user", "alice") == "u-1"
        assert await state.get_id("thread", "vs_1") is None
        assert await state.pending("vs_1") == batch
        await state.complete("vs_1", "k1", [("a", 0), ("b", 1)], now=2.0)
        assert await state.pending("vs_1") is None
        assert await state.delivered("vs_1", [("a", 0), ("b", 1), ("b", 0), ("c", 0)]) == {
            ("a", 0),
            ("b", 1),
        }
        assert await state.delivered("vs_2", [("a", 0)]) == set()
        assert await state.delivered("vs_1", []) == set()
    finally:
        await state.close()


async def test_two_sink_kinds_never_see_each_others_state(state_backend: StateBackend):
    """Rows are namespaced by sink: a v4 id, batch or record is not another sink's."""
    one, other = state_backend.make("zep-v4"), state_backend.make("other")
    await one.open()
    await other.open()
    try:
        await one.put_id("user", "alice", "u-1", now=1.0)
        await one.begin("vs_1", PendingBatch(key="k", target="t", messages=[]), now=1.0)
        await one.complete("vs_1", "k", [("a", 0)], now=1.0)
        assert await other.get_id("user", "alice") is None
        assert await other.pending("vs_1") is None
        assert await other.delivered("vs_1", [("a", 0)]) == set()
        assert await other.purge(older_than=10.0) == 0
        assert await one.delivered("vs_1", [("a", 0)]) == {("a", 0)}
    finally:
        await one.close()
        await other.close()


@pytest.mark.parametrize("seed", range(3))
async def test_replicas_storing_ids_at_once_all_end_with_the_first_one(
    state_backend: StateBackend, seed: int
):
    """Racing writers (several stores, as replicas) for one key all get back one stored id."""
    rng = random.Random(seed)
    replicas = [state_backend.make() for _ in range(3)]
    for replica in replicas:
        await replica.open()
    try:
        writes = [
            (replica, kind, f"{kind}-{rng.randint(0, 2)}", f"created-{n}")
            for n in range(30)
            for replica in [rng.choice(replicas)]
            for kind in [rng.choice(["user", "thread"])]
        ]
        answers = await asyncio.gather(
            *(r.put_id(kind, our, new, now=1.0) for r, kind, our, new in writes)
        )
        by_key: dict[tuple[str, str], set[str]] = {}
        for (_, kind, our, _), answer in zip(writes, answers, strict=True):
            by_key.setdefault((kind, our), set()).add(answer)
        for (kind, our), seen in by_key.items():
            # every writer uses the one mapping stored, the same on every replica
            assert seen == {await replicas[-1].get_id(kind, our)}
    finally:
        for replica in replicas:
            await replica.close()


async def test_an_id_is_replaced_only_by_who_found_it_gone(state: SinkStateStore):
    """``replacing`` swaps the stored id only when it is that id; a forgotten id is re-stored."""
    assert await state.put_id("user", "alice", "u-1", now=1.0) == "u-1"
    assert await state.put_id("user", "alice", "u-2", now=2.0) == "u-1"
    assert await state.put_id("user", "alice", "u-3", now=2.0, replacing="u-0") == "u-1"
    assert await state.put_id("user", "alice", "u-4", now=3.0, replacing="u-1") == "u-4"
    assert await state.put_id("user", "alice", "u-5", now=3.0, replacing="u-1") == "u-4"
    await state.forget_id("user", "alice")
    assert await state.get_id("user", "alice") is None
    assert await state.put_id("user", "alice", "u-6", now=4.0, replacing="u-4") == "u-6"
    assert await state.get_id("user", "alice") == "u-6"


async def test_a_batch_is_completed_or_abandoned_only_by_its_key(state: SinkStateStore):
    """A newer batch replaces the one in flight; an old key neither completes nor drops it."""
    old = PendingBatch(key="k1", target="t", messages=[_message("a")])
    new = PendingBatch(key="k2", target="t", messages=[_message("a"), _message("b")])
    await state.begin("vs_1", old, now=1.0)
    await state.begin("vs_1", new, now=2.0)
    await state.abandon("vs_1", "k1")
    assert await state.pending("vs_1") == new
    await state.complete("vs_1", "k1", [("a", 0)], now=3.0)
    assert await state.pending("vs_1") == new
    await state.complete("vs_1", "k2", [("a", 0), ("b", 0)], now=3.0)
    await state.complete("vs_1", "k2", [("a", 0), ("b", 0)], now=4.0)  # twice: harmless
    assert await state.pending("vs_1") is None
    assert await state.delivered("vs_1", [("a", 0), ("b", 0)]) == {("a", 0), ("b", 0)}
    await state.begin("vs_1", old, now=5.0)
    await state.abandon("vs_1", "k1")
    assert await state.pending("vs_1") is None


@pytest.mark.parametrize(("records", "limit"), [(0, 3), (5, 3), (6, 3), (7, 100)])
async def test_purge_forgets_only_what_is_older_in_bounded_steps(
    state: SinkStateStore, records: int, limit: int
):
    """Old records and batches go (whatever their number against the step size); new stay."""
    for n in range(records):
        await state.complete(f"vs_{n % 2}", "k", [(f"old{n}", 0)], now=1.0)
        await state.begin(f"vs_b{n}", PendingBatch(key="k", target="t", messages=[]), now=1.0)
    await state.complete("vs_0", "k", [("new", 0)], now=10.0)
    await state.begin("vs_new", PendingBatch(key="k", target="t", messages=[]), now=10.0)
    purge = state.purge
    assert await purge(older_than=5.0, limit=limit) == records  # type: ignore[call-arg]
    assert await state.delivered("vs_0", [("new", 0)]) == {("new", 0)}
    assert await state.pending("vs_new") is not None
    assert all([await state.pending(f"vs_b{n}") is None for n in range(records)])
    assert await state.purge(older_than=5.0) == 0


async def test_one_purge_call_stops_after_its_steps(state: SinkStateStore):
    """A purge call does at most ``max_steps`` steps of ``limit``; the next call goes on."""
    await state.complete("vs_1", "k", [(f"m{n}", 0) for n in range(10)], now=1.0)
    purge = state.purge
    assert await purge(older_than=5.0, limit=2, max_steps=2) == 4  # type: ignore[call-arg]
    assert await purge(older_than=5.0, limit=100, max_steps=1) == 6  # type: ignore[call-arg]


async def test_replicas_opening_at_once_migrate_once(state_backend: StateBackend):
    """Several stores opening new storage at once all work (the schema is created once)."""
    replicas = [state_backend.make() for _ in range(4)]
    await asyncio.gather(*(replica.open() for replica in replicas))
    try:
        await replicas[0].put_id("thread", "vs_1", "t-1", now=1.0)
        assert [await r.get_id("thread", "vs_1") for r in replicas] == ["t-1"] * 4
    finally:
        await asyncio.gather(*(replica.close() for replica in replicas))


async def test_many_concurrent_writes_all_land(state: SinkStateStore):
    """Many sessions writing at once: every id, batch and record is stored."""
    await asyncio.gather(
        *(state.put_id("thread", f"vs_{i}", f"t-{i}", now=1.0) for i in range(40)),
        *(state.complete(f"vs_{i}", "k", [("a", 0), ("b", 0)], now=1.0) for i in range(40)),
    )
    assert [await state.get_id("thread", f"vs_{i}") for i in range(40)] == [
        f"t-{i}" for i in range(40)
    ]
    assert all([await state.delivered(f"vs_{i}", [("a", 0), ("b", 0)]) for i in range(40)])
