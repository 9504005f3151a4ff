"""The SQLite sink state store's own traits (schema, group commit), and the v4 sink's helpers.

What every store guarantees is in ``tests/contract/test_sink_state_contract.py``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engram_voice.memory.sink import SinkMessage
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.memory.sqlite_sink_state import MIGRATIONS, SqliteSinkState, migrate
from engram_voice.memory.zep_cloud_wire import batch_key, zep_user_id
from engram_voice.memory.zep_errors import retry_after


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


async def test_the_schema_is_versioned_and_lives_beside_the_queue(tmp_path: Path):
    """The queue's file gets the sink tables once, at the current version, queue untouched."""
    path = tmp_path / "queue.sqlite3"
    queue = SqliteTurnQueue(path)
    await queue.open()
    await queue.close()
    for _ in range(2):
        state = SqliteSinkState(path, sink="zep-v4")
        await state.open()
        await state.close()
    conn = sqlite3.connect(path)
    try:
        versions = conn.execute("SELECT component, version FROM schema_versions").fetchall()
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert versions == [("sink_state", len(MIGRATIONS))]
    assert {"sink_ids", "sink_batches", "sink_delivered", "turns", "sessions"} <= tables


def test_a_file_of_an_older_version_is_migrated_in_one_transaction(tmp_path: Path):
    """Migrations newer than the stored version run once; running again changes nothing."""
    conn = sqlite3.connect(tmp_path / "q.sqlite3", isolation_level=None)
    try:
        assert migrate(conn) == len(MIGRATIONS)
        assert migrate(conn) == len(MIGRATIONS)
        conn.execute("UPDATE schema_versions SET version = 0")
        assert migrate(conn) == len(MIGRATIONS)  # IF NOT EXISTS: re-running v1 is harmless
    finally:
        conn.close()


async def test_concurrent_writes_share_group_commits(tmp_path: Path):
    """Many sessions writing at once cost fewer commits than writes, and all land."""
    state = SqliteSinkState(tmp_path / "q.sqlite3", sink="zep-v4")
    await state.open()
    try:
        await asyncio.gather(
            *(state.put_id("thread", f"vs_{i}", f"t-{i}", now=1.0) for i in range(50))
        )
        assert state.commits < 50
        assert [await state.get_id("thread", f"vs_{i}") for i in range(50)] == [
            f"t-{i}" for i in range(50)
        ]
    finally:
        await state.close()


@given(st.text(min_size=1, max_size=512), st.text(min_size=1, max_size=512))
def test_zep_user_ids_fit_zep_and_never_collide(one: str, two: str):
    """Every usable id maps to at most 500 characters; distinct ids stay distinct."""
    assert 1 <= len(zep_user_id(one)) <= 500
    if one != two:
        assert zep_user_id(one) != zep_user_id(two)


def test_short_ids_are_sent_as_they_are():
    """Ids that fit (Entra object ids, github:1234, local-user) are Zep's user_id unchanged."""
    for user_id in ("3f2b7c1e-0000-4000-8000-000000000001", "github:1234", "local-user"):
        assert zep_user_id(user_id) == user_id


def test_batch_keys_are_deterministic_and_change_with_the_batch():
    """The same batch always gets one key; another thread, range or content another key."""
    batch = [_message("a"), _message("b")]
    key = batch_key("t-1", "vs_1", batch)
    assert batch_key("t-1", "vs_1", list(batch)) == key
    others = {
        batch_key("t-2", "vs_1", batch),
        batch_key("t-1", "vs_2", batch),
        batch_key("t-1", "vs_1", batch[:1]),
        batch_key("t-1", "vs_1", [_message("a"), _message("c")]),
        batch_key("t-1", "vs_1", [_message("a"), _message("b", content="other")]),
        batch_key("t-1", "vs_1", [_message("a"), _message("b", part=1)]),
    }
    assert key not in others
    assert len(others) == 6


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"Retry-After-Ms": "250.5"}, 0.2505),
        ({"retry-after": "9"}, 9.0),
        ({"retry-after-ms": "soon", "retry-after": "7"}, 7.0),
        ({"retry-after-ms": "-5", "retry-after": "3"}, 3.0),
        ({"retry-after": "Thu, 01 Jan 1970 00:01:40 GMT"}, 60.0),
        ({"retry-after": "garbage"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_prefers_milliseconds_then_seconds_or_a_date(headers, expected):
    """``retry-after-ms`` wins when it is a number; else ``Retry-After`` seconds or date."""
    assert retry_after(headers, now=40.0) == expected
