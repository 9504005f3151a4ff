"""The Zep stand-in's ``/api/v4`` subset, driven through the real ``zep-cloud`` 4.x SDK."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from zep_cloud.client import AsyncZep
from zep_cloud.core.api_error import ApiError
from zep_cloud.errors import BadRequestError, ConflictError, NotFoundError, UnauthorizedError
from zep_cloud.types import AddMessage

from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin

TEN_AM = "2026-11-29T10:00:00Z"


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the stand-in on loopback with its SQLite file in a temporary directory."""
    with zep_v4_standin(tmp_path) as standin:
        yield standin


async def _thread(client: AsyncZep, user_id: str = "u1") -> tuple[str, str]:
    user = await client.user.create(user_id=user_id, first_name="Ada")
    assert user.uuid_ is not None
    thread = await client.thread.create(user_uuid=user.uuid_)
    assert thread.uuid_ is not None
    return user.uuid_, thread.uuid_


def _says(content: str, role: str = "user", **extra: object) -> AddMessage:
    return AddMessage(content=content, role=role, **extra)  # type: ignore[arg-type]


async def test_users_and_threads_get_server_generated_uuids(zep):
    """user.create and thread.create answer new UUIDs that get, lookup and list resolve."""
    client = zep.client()
    user_uuid, thread_uuid = await _thread(client)
    assert str(uuid.UUID(user_uuid)) == user_uuid
    assert str(uuid.UUID(thread_uuid)) == thread_uuid
    user = await client.user.get(user_uuid)
    assert (user.user_id, user.first_name, user.graph_uuid is not None) == ("u1", "Ada", True)
    assert (await client.user.lookup(user_id="u1")).uuid_ == user_uuid
    thread = await client.thread.get(thread_uuid)
    assert (thread.uuid_, thread.user_uuid) == (thread_uuid, user_uuid)
    listed = await client.thread.list(user_uuid=user_uuid)
    assert [t.uuid_ for t in listed.items or []] == [thread_uuid]
    other_user, _ = await _thread(client, "u2")
    assert other_user != user_uuid


async def test_messages_round_trip_in_order_with_their_fields(zep):
    """add_messages answers server message UUIDs; list_messages returns them in order."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    first = await client.thread.add_messages(
        thread_uuid,
        messages=[
            _says("one", name="Ada", metadata={"turn_id": "t1"}, reference_time=TEN_AM),
            _says("two", role="assistant", name="Elena"),
        ],
    )
    await client.thread.add_messages(thread_uuid, messages=[_says("three")])
    assert [m.content for m in first.messages or []] == ["one", "two"]
    assert all(m.uuid_ for m in first.messages or [])
    page = await client.thread.list_messages(thread_uuid)
    messages = page.items or []
    assert [m.content for m in messages] == ["one", "two", "three"]
    assert [m.role for m in messages] == ["user", "assistant", "user"]
    assert (messages[0].name, messages[0].metadata) == ("Ada", {"turn_id": "t1"})
    assert messages[0].reference_time == TEN_AM
    assert messages[0].uuid_ == (first.messages or [])[0].uuid_
    assert {m.thread_uuid for m in messages} == {thread_uuid}


async def test_list_messages_pages_through_every_message(zep):
    """The SDK's pager walks all pages in order (opaque cursor, page_size)."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    for batch in range(3):
        await client.thread.add_messages(
            thread_uuid, messages=[_says(f"m{batch * 5 + i}") for i in range(5)]
        )
    pager = await client.thread.list_messages(thread_uuid, page_size=4)
    contents = [m.content async for m in pager]
    assert contents == [f"m{i}" for i in range(15)]


async def test_unknown_uuids_answer_404_and_non_uuids_400_invalid_identifier(zep):
    """A well-formed unknown UUID is 404; an old v3-style id is 400 invalid_identifier."""
    client = zep.client()
    unknown = str(uuid.uuid4())
    for call in (
        lambda: client.user.get(unknown),
        lambda: client.thread.get(unknown),
        lambda: client.thread.create(user_uuid=unknown),
        lambda: client.thread.add_messages(unknown, messages=[_says("x")]),
        lambda: client.thread.get_context(unknown),
        lambda: client.user.lookup(user_id="nobody"),
    ):
        with pytest.raises(NotFoundError) as raised:
            await call()
        assert raised.value.body.error.code == "not_found"
    for call in (
        lambda: client.user.get("u1"),
        lambda: client.thread.get("session-1"),
        lambda: client.thread.add_messages("session-1", messages=[_says("x")]),
    ):
        with pytest.raises(BadRequestError) as bad:
            await call()
        assert bad.value.body.error.code == "invalid_identifier"


async def test_a_taken_user_id_is_a_conflict(zep):
    """Creating a second user with the same user_id answers 409 (lookup finds the first)."""
    client = zep.client()
    await client.user.create(user_id="u1")
    with pytest.raises(ConflictError) as raised:
        await client.user.create(user_id="u1")
    assert raised.value.body.error.param == "user_id"


async def test_the_api_key_is_required(zep):
    """A wrong key answers 401 in v4's error shape."""
    with pytest.raises(UnauthorizedError) as raised:
        await zep.client(api_key="wrong").user.create(user_id="u1")
    assert raised.value.body.error.code == "unauthorized"


async def test_deleting_a_thread_or_user_removes_their_messages(zep):
    """thread.delete and user.delete remove what they own; later reads answer 404."""
    client = zep.client()
    user_uuid, thread_uuid = await _thread(client)
    await client.thread.add_messages(thread_uuid, messages=[_says("x")])
    await client.thread.delete(thread_uuid)
    with pytest.raises(NotFoundError):
        await client.thread.get(thread_uuid)
    second = await client.thread.create(user_uuid=user_uuid)
    assert second.uuid_ is not None
    await client.thread.add_messages(second.uuid_, messages=[_says("y")])
    await client.user.delete(user_uuid)
    with pytest.raises(NotFoundError):
        await client.user.get(user_uuid)
    counts = zep.state()["counts"]
    assert (counts["v4_users"], counts["v4_threads"], counts["v4_messages"]) == (0, 0, 0)


async def test_state_counts_v4_calls_and_data(zep):
    """/_standin/state counts v4 users, threads, messages and calls per endpoint."""
    client = zep.client()
    _, thread_uuid = await _thread(client)
    await client.thread.add_messages(thread_uuid, messages=[_says("a"), _says("b")])
    state = zep.state()
    assert (state["counts"]["v4_users"], state["counts"]["v4_messages"]) == (1, 2)
    assert state["calls"]["v4.messages.add"] == 1
    assert state["calls"]["v4.threads.create"] == 1


async def test_the_v2_subset_still_answers_next_to_v4(zep):
    """The v2 routes keep their ``{"message"}`` error shape on the same server."""
    client = zep.client()
    await client.user.create(user_id="u1")
    async with httpx.AsyncClient(base_url=zep.base_url, timeout=5) as http:
        response = await http.get(
            "/api/v2/users/u1", headers={"Authorization": f"Api-Key {zep.api_key}"}
        )
    assert response.status_code == 404  # v4 users are not v2 users
    assert "message" in response.json()
    with pytest.raises(ApiError):
        await client.thread.get_context(str(uuid.uuid4()))


async def test_v4_data_and_idempotency_keys_persist_across_restarts(tmp_path):
    """Users, threads, messages and recorded keys survive a restart of the stand-in."""
    key = "persist-key-0123456789"
    with zep_v4_standin(tmp_path, api_key=key) as first:
        client = first.client()
        _, thread_uuid = await _thread(client)
        batch = [AddMessage(content="kept", role="user")]
        await client.thread.add_messages(thread_uuid, messages=batch, idempotency_key="b1")
    with zep_v4_standin(tmp_path, api_key=key) as second:
        client = second.client()
        await client.thread.add_messages(thread_uuid, messages=batch, idempotency_key="b1")
        page = await client.thread.list_messages(thread_uuid)
    assert [m.content for m in page.items or []] == ["kept"]


async def test_a_users_newest_thread_is_found_with_order_desc(zep):
    """thread.list(user_uuid=, order="desc", page_size=1) is the user's newest thread only."""
    client = zep.client()
    user_uuid, _ = await _thread(client)
    await _thread(client, "someone-else")
    newest = await client.thread.create(user_uuid=user_uuid)
    page = await client.thread.list(user_uuid=user_uuid, order="desc", page_size=1)
    assert [t.uuid_ for t in page.items or []] == [newest.uuid_]
    assert page.response is not None
    assert page.response.total_size == 2
