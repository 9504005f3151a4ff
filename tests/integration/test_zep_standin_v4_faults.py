"""Fault injection on the stand-in's v4 subset, seen through the real zep-cloud SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from zep_cloud.client import AsyncZep
from zep_cloud.core.api_error import ApiError
from zep_cloud.types import AddMessage

from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the stand-in on loopback with its SQLite file in a temporary directory."""
    with zep_v4_standin(tmp_path) as standin:
        yield standin


async def _thread(client: AsyncZep) -> str:
    user = await client.user.create(user_id="u1")
    assert user.uuid_ is not None
    thread = await client.thread.create(user_uuid=user.uuid_)
    assert thread.uuid_ is not None
    return thread.uuid_


BATCH = [AddMessage(content="one", role="user"), AddMessage(content="two", role="assistant")]


async def _contents(client: AsyncZep, thread_uuid: str) -> list[str | None]:
    page = await client.thread.list_messages(thread_uuid)
    return [m.content for m in page.items or []]


@pytest.mark.parametrize(
    ("plan", "status", "headers"),
    [
        ({"mode": "down"}, 503, {}),
        ({"mode": "error"}, 500, {}),
        ({"mode": "reject"}, 400, {}),
        ({"mode": "throttle", "retry_after": 3}, 429, {"retry-after": "3"}),
        (
            {"mode": "throttle", "retry_after": 2, "retry_after_ms": 1500},
            429,
            {"retry-after": "2", "retry-after-ms": "1500"},
        ),
    ],
)
async def test_injected_faults_answer_in_v4_shape_and_store_nothing(zep, plan, status, headers):
    """Each fault mode answers its status (429 as a plain ApiError, with its retry headers)."""
    client = zep.client()
    thread_uuid = await _thread(client)
    zep.fault(**plan)
    with pytest.raises(ApiError) as raised:
        await client.thread.add_messages(thread_uuid, messages=BATCH)
    assert raised.value.status_code == status
    assert raised.value.headers is not None
    assert {name: raised.value.headers.get(name) for name in headers} == headers
    body = raised.value.body
    error = body.error if hasattr(body, "error") else body["error"]
    assert (error.message if hasattr(error, "message") else error["message"]).endswith("(injected)")
    zep.clear()
    assert await _contents(client, thread_uuid) == []


async def test_a_fault_with_a_count_applies_to_that_many_calls(zep):
    """``count: 1`` fails the next call only; the one after succeeds."""
    client = zep.client()
    thread_uuid = await _thread(client)
    zep.fault(mode="down", count=1)
    with pytest.raises(ApiError):
        await client.thread.add_messages(thread_uuid, messages=BATCH)
    await client.thread.add_messages(thread_uuid, messages=BATCH)
    assert zep.state()["faults"]["injected"] == 1


async def test_store_then_fail_stores_the_batch_and_loses_the_answer(zep):
    """The batch is stored but the caller sees 500; a retry with the key replays, no duplicate."""
    client = zep.client()
    thread_uuid = await _thread(client)
    zep.fault(mode="store_then_fail", count=1)
    with pytest.raises(ApiError) as raised:
        await client.thread.add_messages(thread_uuid, messages=BATCH, idempotency_key="b1")
    assert raised.value.status_code == 500
    assert await _contents(client, thread_uuid) == ["one", "two"]
    result = await client.thread.add_messages(thread_uuid, messages=BATCH, idempotency_key="b1")
    assert [m.content for m in result.messages or []] == ["one", "two"]
    assert await _contents(client, thread_uuid) == ["one", "two"]


async def test_the_sdks_own_retry_after_a_lost_answer_does_not_duplicate(zep):
    """With SDK retries on, a 500 after storing is retried with the same key: stored once."""
    client = zep.client(max_retries=1)
    thread_uuid = await _thread(client)
    zep.fault(mode="store_then_fail", count=1)
    result = await client.thread.add_messages(thread_uuid, messages=BATCH)
    assert len(result.messages or []) == 2
    assert await _contents(client, thread_uuid) == ["one", "two"]
    assert zep.state()["calls"]["v4.replays"] == 1


async def test_store_then_timeout_stores_the_batch_and_holds_the_answer(zep):
    """The caller's read timeout fires although the batch is stored; a keyed retry replays."""
    thread_uuid = await _thread(zep.client())
    zep.fault(mode="store_then_timeout", count=1, hold_ms=60_000)
    with pytest.raises(httpx.ReadTimeout):
        await zep.client(timeout=0.5).thread.add_messages(
            thread_uuid, messages=BATCH, idempotency_key="b1"
        )
    zep.clear()  # releases the held answer
    client = zep.client()
    assert await _contents(client, thread_uuid) == ["one", "two"]
    await client.thread.add_messages(thread_uuid, messages=BATCH, idempotency_key="b1")
    assert await _contents(client, thread_uuid) == ["one", "two"]


async def test_store_then_faults_leave_reads_and_other_writes_alone(zep):
    """Only memory writes are stored-then-failed; user and thread calls answer normally."""
    zep.fault(mode="store_then_fail")
    client = zep.client()
    thread_uuid = await _thread(client)
    assert await _contents(client, thread_uuid) == []
    assert zep.state()["faults"]["injected"] == 0


async def test_a_slow_stand_in_delays_every_call(zep):
    """``latency_ms`` beyond the client's timeout makes every call time out."""
    thread_uuid = await _thread(zep.client())
    zep.fault(latency_ms=2_000)
    with pytest.raises(httpx.ReadTimeout):
        await zep.client(timeout=0.2).thread.get(thread_uuid)
