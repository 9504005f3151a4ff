"""The stand-in's context block: what a user said, only that user's, through the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from zep_cloud.client import AsyncZep
from zep_cloud.types import AddMessage

from engram_voice.zep_standin.v4_context import CONTEXT_MESSAGES, FACT_CHARS
from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the stand-in on loopback with its SQLite file in a temporary directory."""
    with zep_v4_standin(tmp_path) as standin:
        yield standin


async def _user(client: AsyncZep, user_id: str) -> str:
    user = await client.user.create(user_id=user_id)
    assert user.uuid_ is not None
    return user.uuid_


async def _thread(client: AsyncZep, user_uuid: str) -> str:
    thread = await client.thread.create(user_uuid=user_uuid)
    assert thread.uuid_ is not None
    return thread.uuid_


async def _context(client: AsyncZep, thread_uuid: str) -> str:
    return (await client.thread.get_context(thread_uuid)).context or ""


async def test_the_context_summarises_every_thread_of_the_user_and_no_other_user(zep):
    """A new thread's context lists the user's earlier messages, never another user's."""
    client = zep.client()
    ada, bob = await _user(client, "ada"), await _user(client, "bob")
    earlier = await _thread(client, ada)
    await client.thread.add_messages(
        earlier,
        messages=[
            AddMessage(content="I live in Lisbon.", role="user", name="Ada"),
            AddMessage(content="Noted, Lisbon.", role="assistant", name="Elena"),
            AddMessage(content="internal prompt", role="system"),
        ],
    )
    await client.thread.add_messages(
        await _thread(client, bob), messages=[AddMessage(content="I live in Oslo.", role="user")]
    )
    context = await _context(client, await _thread(client, ada))
    assert "<FACTS>" in context
    assert "Ada (user) said: I live in Lisbon." in context
    assert "Elena (assistant) said: Noted, Lisbon." in context
    assert "Oslo" not in context
    assert "internal prompt" not in context
    assert context == await _context(client, earlier)  # one block per user, deterministic
    assert "Oslo" in await _context(client, await _thread(client, bob))


async def test_a_user_without_messages_has_an_empty_context(zep):
    """No stored user/assistant messages: the context block is empty."""
    client = zep.client()
    assert await _context(client, await _thread(client, await _user(client, "new"))) == ""


async def test_the_context_keeps_the_newest_messages_and_cuts_long_ones(zep):
    """Only the newest messages appear, newest first, each cut to a bounded fact line."""
    client = zep.client()
    thread_uuid = await _thread(client, await _user(client, "ada"))
    total = CONTEXT_MESSAGES + 5
    for start in range(0, total, 5):
        batch = [AddMessage(content=f"fact {i:03d}", role="user") for i in range(start, start + 5)]
        await client.thread.add_messages(thread_uuid, messages=batch)
    await client.thread.add_messages(
        thread_uuid, messages=[AddMessage(content="y" * 2 * FACT_CHARS, role="user")]
    )
    context = await _context(client, thread_uuid)
    shown = sorted(
        (context.index(f"fact {i:03d}"), f"fact {i:03d}")
        for i in range(total)
        if f"fact {i:03d}" in context
    )
    newest = [f"fact {i:03d}" for i in range(total - CONTEXT_MESSAGES + 1, total)]
    assert [fact for _, fact in shown] == newest[::-1]
    assert "y" * FACT_CHARS not in context
    assert "y" * (FACT_CHARS - 1) + "\u2026" in context


async def test_return_context_adds_the_block_to_the_add_messages_answer(zep):
    """``return_context=True`` answers the same block get_context returns."""
    client = zep.client()
    thread_uuid = await _thread(client, await _user(client, "ada"))
    result = await client.thread.add_messages(
        thread_uuid, messages=[AddMessage(content="I like tea.", role="user")], return_context=True
    )
    assert result.context == await _context(client, thread_uuid)
    assert "I like tea." in (result.context or "")
