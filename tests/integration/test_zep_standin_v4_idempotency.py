"""v4 rules and ``Idempotency-Key`` replay on the stand-in, through the real zep-cloud SDK."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from zep_cloud.client import AsyncZep
from zep_cloud.core.api_error import ApiError
from zep_cloud.errors import BadRequestError
from zep_cloud.types import AddMessage

from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin

LIMIT = 100


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the stand-in with a small content limit (configurable, 4,096 by default)."""
    with zep_v4_standin(tmp_path, v4_max_content_chars=LIMIT) as standin:
        yield standin


async def _thread(client: AsyncZep, user_id: str = "u1") -> tuple[str, str]:
    user = await client.user.create(user_id=user_id)
    assert user.uuid_ is not None
    thread = await client.thread.create(user_uuid=user.uuid_)
    assert thread.uuid_ is not None
    return user.uuid_, thread.uuid_


def _says(content: str = "hi", role: Any = "user", **extra: Any) -> AddMessage:
    return AddMessage(content=content, role=role, **extra)


def _stored(zep: ZepV4StandIn) -> int:
    return int(zep.state()["counts"]["v4_messages"])


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([_says()] * 31, "messages"),
        ([_says("x" * (LIMIT + 1))], "messages[0].content"),
        ([_says(role="norole")], "messages[0].role"),
        ([_says(), _says(metadata={f"k{i}": i for i in range(11)})], "messages[1].metadata"),
        ([_says(metadata={"nested": {"a": 1}})], "messages[0].metadata.nested"),
        ([_says(uuid="6f1c0c8e-1d2b-4c55-9a0e-0a4f3b1f2c3d")], "messages[0].uuid"),
        ([_says(reference_time="not a time")], "messages[0].reference_time"),
    ],
)
async def test_a_batch_breaking_a_v4_rule_is_refused_whole(zep, messages, param):
    """Each v4 rule answers 400 with the offending field, and none of the batch is stored."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    with pytest.raises(BadRequestError) as raised:
        await client.thread.add_messages(thread_uuid, messages=messages)
    assert raised.value.body.error.param == param
    assert _stored(zep) == 0


async def test_batches_at_every_limit_are_accepted(zep):
    """30 messages, content of exactly the limit, 10 scalar metadata keys and all roles pass."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    roles = ["user", "assistant", "system", "function", "tool"]
    metadata = {f"k{i}": [i, "x", True] if i % 2 else i for i in range(10)}
    batch = [_says("x" * LIMIT, role=roles[i % 5], metadata=metadata) for i in range(30)]
    result = await client.thread.add_messages(thread_uuid, messages=batch)
    assert len(result.messages or []) == 30
    assert _stored(zep) == 30


WRITES: dict[str, Callable[[AsyncZep, str, str, str], Awaitable[Any]]] = {
    "user.create": lambda c, _u, _t, key: c.user.create(user_id="again", idempotency_key=key),
    "thread.create": lambda c, u, _t, key: c.thread.create(user_uuid=u, idempotency_key=key),
    "thread.add_messages": lambda c, _u, t, key: c.thread.add_messages(
        t, messages=[_says("once"), _says("twice?", role="assistant")], idempotency_key=key
    ),
}


@pytest.mark.parametrize("write", sorted(WRITES))
async def test_the_same_key_and_body_replays_the_first_answer(zep, write):
    """A write repeated with its Idempotency-Key returns the first answer and stores nothing."""
    client = zep.client()
    user_uuid, thread_uuid = await _thread(client)
    before = zep.state()["counts"]
    first = await WRITES[write](client, user_uuid, thread_uuid, "key-1")
    middle = zep.state()["counts"]
    again = await WRITES[write](client, user_uuid, thread_uuid, "key-1")
    assert again == first  # same server UUIDs and timestamps
    state = zep.state()
    assert state["counts"] == middle
    assert state["counts"] != before
    assert state["calls"]["v4.replays"] == 1


async def test_the_same_key_with_another_body_is_refused(zep):
    """Reusing a key for a different batch answers 422 idempotency_key_reused, stores nothing."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    await client.thread.add_messages(thread_uuid, messages=[_says("a")], idempotency_key="k")
    with pytest.raises(ApiError) as raised:
        await client.thread.add_messages(thread_uuid, messages=[_says("b")], idempotency_key="k")
    assert raised.value.status_code == 422
    assert raised.value.body["error"]["code"] == "idempotency_key_reused"
    assert _stored(zep) == 1


async def test_a_refused_write_records_no_key(zep):
    """A 400 stores no key: the corrected batch with the same key is applied."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    with pytest.raises(BadRequestError):
        await client.thread.add_messages(thread_uuid, messages=[_says()] * 31, idempotency_key="k")
    await client.thread.add_messages(thread_uuid, messages=[_says()], idempotency_key="k")
    assert _stored(zep) == 1


async def test_writes_without_a_caller_key_are_applied_each_time(zep):
    """The SDK's per-call random key does not dedupe: the same batch twice is stored twice."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    for _ in range(2):
        await client.thread.add_messages(thread_uuid, messages=[_says("same")])
    assert _stored(zep) == 2
