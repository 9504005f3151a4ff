from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from zep_python.base_client import AsyncBaseClient
from zep_python.core.api_error import ApiError
from zep_python.types.message import Message

from engram_voice.credentials.secret import Secret
from engram_voice.zep_standin import ZepStandinConfig, create_standin_app
from tests.support.servers import serve_app

KEY = "standin-key-0123456789"


@pytest.fixture(name="standin_url")
def fixture_standin_url(tmp_path: Path) -> Iterator[str]:
    """Serve the Zep stand-in on loopback with a SQLite file in a temporary directory."""
    config = ZepStandinConfig(api_key=Secret(KEY), db_path=str(tmp_path / "zep.sqlite3"))
    with serve_app(create_standin_app(config), ready_path="/healthz") as url:
        yield url


def _client(url: str, key: str = KEY) -> AsyncBaseClient:
    # The SDK's own client class; AsyncZep would let a stray ZEP_API_URL redirect it.
    return AsyncBaseClient(base_url=f"{url}/api/v2", api_key=key, timeout=5)


def _message(uuid: str, content: str = "hi", role_type: str | None = "user") -> Message:
    return Message(uuid=uuid, role_type=role_type, role="user", content=content)


async def _session(client: AsyncBaseClient, session_id: str = "s1", user_id: str = "u1") -> None:
    await client.user.add(user_id=user_id)
    await client.memory.add_session(session_id=session_id, user_id=user_id, metadata={"agent": "a"})


async def test_messages_round_trip_in_order_through_the_sdk(standin_url):
    """Users, sessions and memory added with the SDK come back in order with their fields."""
    client = _client(standin_url)
    await _session(client)
    await client.memory.add(
        session_id="s1", messages=[_message("u1", "one"), _message("u2", "two")]
    )
    await client.memory.add(session_id="s1", messages=[_message("u3", "three")])
    memory = await client.memory.get("s1")
    assert [m.content for m in memory.messages] == ["one", "two", "three"]
    assert memory.messages[0].uuid_ == "u1"
    session = await client.memory.get_session("s1")
    assert (session.user_id, session.metadata) == ("u1", {"agent": "a"})
    assert (await client.memory.get_session_message("s1", "u2")).content == "two"
    assert (await client.user.get("u1")).user_id == "u1"


async def test_the_api_key_header_is_required(standin_url):
    """A wrong API key answers 401, as Zep does."""
    with pytest.raises(ApiError) as raised:
        await _client(standin_url, key="wrong").user.add(user_id="u1")
    assert raised.value.status_code == 401


async def test_a_duplicate_uuid_rejects_the_whole_batch(standin_url):
    """A batch with one existing uuid answers 400 and stores none of its messages."""
    client = _client(standin_url)
    await _session(client)
    await client.memory.add(session_id="s1", messages=[_message("u1")])
    with pytest.raises(ApiError) as raised:
        await client.memory.add(session_id="s1", messages=[_message("u2"), _message("u1")])
    assert raised.value.status_code == 400
    assert [m.uuid_ for m in (await client.memory.get("s1")).messages] == ["u1"]


@pytest.mark.parametrize(
    "messages",
    [
        [_message(f"m{i}") for i in range(31)],
        [_message("m", role_type=None)],
        [_message("m", content="x" * 2501)],
    ],
    ids=["over-30-messages", "role-type-missing", "content-too-long"],
)
async def test_zep_message_rules_are_enforced(standin_url, messages):
    """More than 30 messages, a missing role_type or too long content answer 400."""
    client = _client(standin_url)
    await _session(client)
    with pytest.raises(ApiError) as raised:
        await client.memory.add(session_id="s1", messages=messages)
    assert raised.value.status_code == 400


async def test_session_rules_are_enforced(standin_url):
    """A session for an unknown user, or a second session with the same id, answers 400."""
    client = _client(standin_url)
    with pytest.raises(ApiError) as unknown:
        await client.memory.add_session(session_id="s1", user_id="nobody")
    await _session(client)
    with pytest.raises(ApiError) as duplicate:
        await client.memory.add_session(session_id="s1", user_id="u1")
    with pytest.raises(ApiError) as missing:
        await client.memory.get_session("nope")
    assert (unknown.value.status_code, duplicate.value.status_code) == (400, 400)
    assert missing.value.status_code == 404


async def test_faults_can_be_injected_and_cleared(standin_url):
    """Injected 429 carries Retry-After; 500 and down apply for the given count; clear restores."""
    client = _client(standin_url)
    async with httpx.AsyncClient(base_url=standin_url) as admin:
        await admin.post(
            "/_standin/faults", json={"mode": "throttle", "retry_after": 7, "count": 1}
        )
        raw = await admin.post(
            "/api/v2/users", json={"user_id": "x"}, headers={"Authorization": f"Api-Key {KEY}"}
        )
        assert (raw.status_code, raw.headers["retry-after"]) == (429, "7")
        await admin.post("/_standin/faults", json={"mode": "error"})
        with pytest.raises(ApiError) as failed:
            await client.user.add(user_id="u1")
        assert failed.value.status_code == 500
        await admin.post("/_standin/faults", json={"clear": True})
        await client.user.add(user_id="u1")
        state = (await admin.get("/_standin/state")).json()
    assert state["counts"]["users"] == 1
    assert state["faults"]["injected"] == 2


async def test_data_persists_across_restarts(tmp_path):
    """The stand-in keeps users, sessions and messages in SQLite across restarts."""
    config = ZepStandinConfig(api_key=Secret(KEY), db_path=str(tmp_path / "zep.sqlite3"))
    with serve_app(create_standin_app(config), ready_path="/healthz") as url:
        client = _client(url)
        await _session(client)
        await client.memory.add(session_id="s1", messages=[_message("u1", "kept")])
    with serve_app(create_standin_app(config), ready_path="/healthz") as url:
        memory = await _client(url).memory.get("s1")
    assert [m.content for m in memory.messages] == ["kept"]


@pytest.mark.parametrize(
    "content",
    ["a\u0000b", "\u0000", "end\u0000", "\u0000" * 3],
    ids=["middle", "alone", "end", "many"],
)
async def test_content_with_nul_is_refused_as_postgresql_refuses_it(standin_url, content):
    """A message with U+0000 (PostgreSQL text cannot hold it) rejects the whole call with 400."""
    client = _client(standin_url)
    await _session(client)
    with pytest.raises(ApiError) as raised:
        await client.memory.add(
            session_id="s1", messages=[_message("ok"), _message("bad", content=content)]
        )
    assert raised.value.status_code == 400
    assert "0x00" in str(raised.value.body)
    assert (await client.memory.get("s1")).messages in (None, [])


async def test_an_encoded_id_is_one_path_segment_and_an_unencoded_slash_is_no_route(standin_url):
    """Like Zep, ``/users/a%2Fb`` is the user ``a/b`` and ``/users/a/b`` is a 404."""
    await _client(standin_url).user.add(user_id="a/b")
    headers = {"Authorization": f"Api-Key {KEY}"}
    async with httpx.AsyncClient(base_url=f"{standin_url}/api/v2", headers=headers) as http:
        encoded = await http.get("/users/a%2Fb")
        unencoded = await http.get("/users/a/b")
    assert encoded.status_code == 200
    assert encoded.json()["user_id"] == "a/b"
    assert unencoded.status_code == 404


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/users", b'{"user_id": "caf\xe9"}'),
        ("/sessions", b'{"session_id": "s\xff", "user_id": "u1"}'),
        ("/sessions/s1/memory", b'{"messages": [{"role_type": "user", "content": "\xc3"}]}'),
        ("/users", b'{"user_id": "u1"'),
    ],
    ids=["latin1-user", "invalid-byte-session", "truncated-utf8-memory", "truncated-json"],
)
async def test_a_body_that_is_not_utf8_json_is_a_400_like_zep(standin_url, path, body):
    """A write whose body is not UTF-8 JSON is refused with 400 and Zep's message shape."""
    await _session(_client(standin_url))
    headers = {"Authorization": f"Api-Key {KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=f"{standin_url}/api/v2", headers=headers) as http:
        answer = await http.post(path, content=body)
    assert answer.status_code == 400
    assert "invalid request body" in answer.json()["message"]


async def test_store_then_fail_stores_a_v2_batch_and_loses_the_answer(standin_url):
    """``store_then_fail`` stores the memory batch, answers 500, and a resend is a duplicate."""
    client = _client(standin_url)
    await _session(client)
    async with httpx.AsyncClient(base_url=standin_url) as admin:
        await admin.post("/_standin/faults", json={"mode": "store_then_fail", "count": 1})
    batch = [_message("u1", "one"), _message("u2", "two")]
    with pytest.raises(ApiError) as lost:
        await client.memory.add(session_id="s1", messages=batch)
    assert lost.value.status_code == 500
    assert [m.content for m in (await client.memory.get("s1")).messages] == ["one", "two"]
    with pytest.raises(ApiError) as resent:
        await client.memory.add(session_id="s1", messages=batch)
    assert resent.value.status_code == 400  # the v2 uuids already exist: nothing stored twice
