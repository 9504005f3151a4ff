"""USAGE_STORE=postgres without its database: start-up goes on, writes wait, limits say so.

The PostgreSQL store opens in the background (the memory queue's connector): while the
database does not answer, ``start`` has returned, writes wait in a bounded buffer (a full
one drops and counts, never blocks), ``/status`` shows the connection state, and the
meter's limits count this process's calls only until the stored totals are read.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from engram_voice.errors import UsageLimitReachedError
from engram_voice.usage import MemoryUsageStore, UsageMeter, UsageSettings
from engram_voice.usage.buffered import WriteCounts
from engram_voice.usage.cli import usage_main
from engram_voice.usage.pending import PendingWrites
from engram_voice.usage.postgres_store import PostgresUsageStore
from engram_voice.usage.records import (
    TOKEN_KINDS,
    CallEnded,
    CallStarted,
    DailyUsage,
    TokensUsed,
    UsageWrite,
)
from engram_voice.usage.store import apply_write
from tests.support.clock import FakeClock
from tests.support.polling import async_poll_until
from tests.support.servers import free_port

DAY = "2027-01-01"
NOON = datetime(2027, 1, 1, 12, tzinfo=UTC).timestamp()


def _unreachable(**kwargs: Any) -> PostgresUsageStore:
    """Return a store on a loopback port where nothing listens, opening in the background."""
    conninfo = f"host=127.0.0.1 port={free_port()} dbname=usage user=usage"
    return PostgresUsageStore(
        conninfo, connect_timeout=1, open_in_background=True, connect_wait_max=0.2, **kwargs
    )


async def test_a_store_without_its_database_starts_buffers_and_says_why() -> None:
    """Start returns at once, writes are buffered, /status shows connecting and the reason."""
    store = _unreachable()
    async with asyncio.timeout(5):
        await store.start()
    try:
        assert store.record(CallStarted("c1", "alice", "elena", "azure-openai", DAY, 1.0))
        assert store.record(CallEnded("c1", "alice", DAY, 30.0, "client_hangup", 2.0))
        await store.flush()  # returns at once: nothing can be committed yet
        described: dict[str, Any] = await async_poll_until(
            partial(_described_with_error, store), what="a failed attempt on describe()"
        )
    finally:
        with capture_logs() as logs:
            await store.close()
    assert described["connection"]["state"] == "connecting"
    assert described["connection"]["last_error"] == "no database connection in time"
    assert (described["healthy"], described["pending_writes"], described["written"]) == (
        False,
        2,
        0,
    )
    unsaved = [e for e in logs if e["event"] == "usage.writes_unsaved"]
    assert [e["writes"] for e in unsaved] == [2]
    assert (await store.describe())["dropped_writes"] == 2


async def _described_with_error(store: PostgresUsageStore) -> dict[str, Any]:
    """Return the store's description once an attempt failed, else an empty (falsy) one."""
    described = await store.describe()
    return described if described["connection"].get("last_error") else {}


@pytest.mark.parametrize("extra", [1, 7])
async def test_a_full_buffer_drops_and_counts_without_blocking(extra: int) -> None:
    """Past ``max_pending`` entries each new call's write is refused at once and counted."""
    store = _unreachable(max_pending=4)
    await store.start()
    try:
        results = [
            store.record(CallStarted(f"c{n}", "alice", "elena", "azure-openai", DAY, 1.0))
            for n in range(4 + extra)
        ]
        described = await store.describe()
    finally:
        await store.close()
    assert results == [True] * 4 + [False] * extra
    assert (described["pending_writes"], described["dropped_writes"]) == (4, extra)


_CALLS = st.sampled_from(["c1", "c2", "c3"])
_TOKENS = st.fixed_dictionaries({k: st.integers(min_value=0, max_value=50) for k in TOKEN_KINDS})
_STEP = st.one_of(
    st.tuples(st.just("start"), _CALLS),
    st.tuples(st.just("tokens"), _CALLS, _TOKENS),
    st.tuples(st.just("end"), _CALLS, st.floats(min_value=0, max_value=600)),
    st.tuples(st.just("take")),
)


def _write(step: tuple[Any, ...]) -> UsageWrite:
    call = step[1]
    user = "alice" if call != "c3" else "bob"
    if step[0] == "start":
        return CallStarted(call, user, "elena", "azure-openai", DAY, 1.0)
    if step[0] == "tokens":
        return TokensUsed(call, user, DAY, step[2])
    return CallEnded(call, user, DAY, step[2], "client_hangup", 2.0)


def _totals(days: dict[tuple[str, str], DailyUsage]) -> dict[tuple[str, str], Any]:
    return {key: (d.calls, round(d.seconds, 6), d.tokens) for key, d in days.items()}


@settings(max_examples=150, deadline=None)
@given(st.lists(_STEP, max_size=40))
def test_merged_buffered_writes_store_the_same_totals(steps: list[tuple[Any, ...]]) -> None:
    """However writes and the writer's takes interleave, merging changes no total."""

    async def run() -> None:
        pending = PendingWrites(10_000, WriteCounts())
        direct: dict[tuple[str, str], DailyUsage] = {}
        direct_calls: dict[str, dict[str, Any]] = {}
        merged: dict[tuple[str, str], DailyUsage] = {}
        merged_calls: dict[str, dict[str, Any]] = {}

        async def take() -> None:
            for item in await pending.take(10_000) if len(pending) else []:
                assert isinstance(item, CallStarted | TokensUsed | CallEnded)
                apply_write(merged, merged_calls, item)

        for step in steps:
            if step[0] == "take":
                await take()
                continue
            write = _write(step)
            apply_write(direct, direct_calls, write)
            assert pending.put(write)
        await take()
        assert _totals(merged) == _totals(direct)

    asyncio.run(run())


@pytest.mark.parametrize("writes", [1, 2, 50, 20_000])
def test_a_calls_waiting_token_counts_take_one_entry(writes: int) -> None:
    """Token writes of one call not yet taken by the writer share one entry, never filling it."""
    pending = PendingWrites(2, WriteCounts())
    tokens = dict.fromkeys(TOKEN_KINDS, 1)
    assert all(pending.put(TokensUsed("c1", "alice", DAY, tokens)) for _ in range(writes))
    assert (len(pending), pending.merged) == (1, writes - 1)


class LateStore(MemoryUsageStore):
    """A store that opens only when the test says so, applying writes buffered meanwhile."""

    def __init__(self, stored: Sequence[UsageWrite]) -> None:
        super().__init__()
        for write in stored:
            super().record(write)
        self._on_open: Callable[[], Awaitable[None]] | None = None
        self._buffer: list[UsageWrite] | None = []

    async def start(self, on_open: Callable[[], Awaitable[None]] | None = None) -> None:
        """Return at once; :meth:`open` opens it later (as PostgreSQL in the background)."""
        self._on_open = on_open

    async def open(self) -> None:
        """Open: run the hook, then apply what was buffered."""
        if self._on_open is not None:
            await self._on_open()
        buffered, self._buffer = self._buffer or [], None
        for write in buffered:
            super().record(write)

    def record(self, write: UsageWrite) -> bool:
        """Buffer until open, then apply at once."""
        if self._buffer is not None:
            self._buffer.append(write)
            return True
        return super().record(write)


@settings(max_examples=60, deadline=None)
@given(stored=st.integers(min_value=0, max_value=4), early=st.integers(min_value=0, max_value=4))
def test_limits_count_this_process_until_the_store_opens_then_everything_once(
    stored: int, early: int
) -> None:
    """Before the store opens only this process's calls count; after, stored ones too, once."""

    async def run() -> None:
        history = [
            CallStarted(f"old{n}", "alice", "elena", "azure-openai", DAY, NOON - 60)
            for n in range(stored)
        ]
        store = LateStore(history)
        limit = 4
        meter = UsageMeter(store, UsageSettings(max_calls_per_day=limit), clock=FakeClock(NOON))
        await meter.start()
        with capture_logs() as logs:
            for n in range(early):
                meter.check("alice")  # never refused: the stored calls are not known yet
                meter.call_started(f"new{n}", "alice", "elena", "azure-openai")
        warned = [e for e in logs if e["event"] == "usage.limits_without_stored_totals"]
        assert len(warned) == (1 if early else 0)
        assert (await meter.describe())["limits"]["stored_totals_loaded"] is False

        await store.open()
        assert meter.used_today("alice")[0] == stored + early
        (row,) = await store.daily(user_id="alice") or [DailyUsage("alice", DAY)]
        assert row.calls == stored + early  # the buffered starts counted once, after the read
        assert (await meter.describe())["limits"]["stored_totals_loaded"] is True
        if stored + early >= limit:
            with pytest.raises(UsageLimitReachedError):
                meter.check("alice")
        else:
            meter.check("alice")

    asyncio.run(run())


def test_the_usage_command_says_why_when_the_database_cannot_be_reached(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`engram-voice usage` on an unreachable USAGE_STORE=postgres exits 1 with the reason."""
    password = "usage-cli-secret-0123456789"
    env = {
        "USAGE_STORE": "postgres",
        "MEMORY_POSTGRES_HOST": "127.0.0.1",
        "MEMORY_POSTGRES_PORT": str(free_port()),
        "MEMORY_POSTGRES_USER": "usage",
        "MEMORY_POSTGRES_PASSWORD": password,
        "MEMORY_POSTGRES_CONNECT_TIMEOUT_SECONDS": "1",
        "LOG_LEVEL": "warning",
    }
    args = argparse.Namespace(user=None, since=None, until=None, json=True)
    assert usage_main(args, env) == 1
    err = capsys.readouterr().err
    assert "engram-voice usage: the usage database: no database connection in time" in err
    assert password not in err
