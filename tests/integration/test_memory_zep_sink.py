from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from zep_python.base_client import AsyncBaseClient
from zep_python.types.message import Message

from engram_voice.credentials.secret import Secret
from engram_voice.memory.settings import ZepSettings
from engram_voice.memory.sink import SinkRejectedError, SinkUnavailableError
from engram_voice.memory.zep_sink import ZepSink
from engram_voice.zep_standin import ZepStandinConfig, create_standin_app
from tests.support.servers import free_port, serve_app

KEY = "sink-test-key-0123456789"


@pytest.fixture(name="standin_url")
def fixture_standin_url(tmp_path: Path) -> Iterator[str]:
    """Serve the Zep stand-in on loopback."""
    config = ZepStandinConfig(api_key=Secret(KEY), db_path=str(tmp_path / "zep.sqlite3"))
    with serve_app(create_standin_app(config), ready_path="/healthz") as url:
        yield url


def _settings(url: str, key: str = KEY, timeout: float = 5.0) -> ZepSettings:
    return ZepSettings(
        api_url=url,
        api_key=Secret(key),
        timeout_seconds=timeout,
        connect_timeout_seconds=1.0,
        max_message_chars=2500,
    )


@pytest.fixture(name="sink")
async def fixture_sink(standin_url: str) -> AsyncIterator[ZepSink]:
    """Yield a Zep sink talking to the stand-in through zep-python."""
    sink = ZepSink(_settings(standin_url))
    yield sink
    await sink.aclose()


def _message(uuid: str) -> Message:
    return Message(uuid=uuid, role_type="user", role="user", content="hi", metadata={})


async def _fault(url: str, **plan: object) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{url}/_standin/faults", json=plan)).raise_for_status()


async def test_ensure_creates_user_and_session_once(sink, standin_url):
    """Ensuring a session creates the user and the session, and is idempotent."""
    await sink.ensure_session(user_id="alice", session_id="vs_1", agent="elena")
    sink.forget_session("vs_1")
    await sink.ensure_session(user_id="alice", session_id="vs_1", agent="elena")
    await sink.ensure_session(user_id="alice", session_id="vs_2", agent="elena")
    async with httpx.AsyncClient() as client:
        counts = (await client.get(f"{standin_url}/_standin/state")).json()["counts"]
    assert (counts["users"], counts["sessions"]) == (1, 2)


async def test_another_users_session_is_refused(sink):
    """A Zep session that belongs to another user is a permanent rejection."""
    await sink.ensure_session(user_id="alice", session_id="vs_1", agent="elena")
    sink.forget_session("vs_1")
    with pytest.raises(SinkRejectedError, match="another user"):
        await sink.ensure_session(user_id="mallory", session_id="vs_1", agent="elena")


async def test_duplicate_uuid_is_a_400_rejection_and_existence_is_checkable(sink):
    """Re-sending a stored uuid is rejected with 400, and the message is found by uuid."""
    await sink.ensure_session(user_id="alice", session_id="vs_1", agent="elena")
    await sink.add_messages("vs_1", [_message("6f1c2b1e-0000-4000-8000-000000000001")])
    with pytest.raises(SinkRejectedError) as raised:
        await sink.add_messages("vs_1", [_message("6f1c2b1e-0000-4000-8000-000000000001")])
    assert raised.value.status == 400
    assert await sink.message_exists("vs_1", "6f1c2b1e-0000-4000-8000-000000000001")
    assert not await sink.message_exists("vs_1", "6f1c2b1e-0000-4000-8000-000000000002")


async def test_throttling_is_transient_and_carries_retry_after(sink, standin_url):
    """A 429 becomes a transient error with the Retry-After the SDK would have dropped."""
    await _fault(standin_url, mode="throttle", retry_after=9)
    with pytest.raises(SinkUnavailableError) as raised:
        await sink.ensure_session(user_id="alice", session_id="vs_1", agent="elena")
    assert (raised.value.status, raised.value.retry_after) == (429, 9.0)


async def test_server_errors_and_down_are_transient(sink, standin_url):
    """500 and 503 answers are transient failures."""
    for mode, status in (("error", 500), ("down", 503)):
        await _fault(standin_url, mode=mode)
        with pytest.raises(SinkUnavailableError) as raised:
            await sink.ensure_session(user_id="alice", session_id="vs_1", agent="elena")
        assert raised.value.status == status


async def test_a_wrong_api_key_is_transient_and_names_the_setting(standin_url):
    """401 keeps the turns queued (no dead letter per batch) and tells the operator what to fix."""
    sink = ZepSink(_settings(standin_url, key="wrong"))
    try:
        with pytest.raises(SinkUnavailableError, match="ZEP_API_KEY") as raised:
            await sink.ensure_session(user_id="alice", session_id="vs_1", agent="elena")
        assert raised.value.status == 401
        assert "wrong" not in str(raised.value)
    finally:
        await sink.aclose()


async def test_an_unreachable_zep_is_transient():
    """Nothing listening on the Zep port is a transient failure."""
    sink = ZepSink(_settings(f"http://127.0.0.1:{free_port()}"))
    try:
        with pytest.raises(SinkUnavailableError, match="unreachable"):
            await sink.ensure_session(user_id="a", session_id="s", agent="e")
    finally:
        await sink.aclose()


async def test_a_slow_zep_times_out(standin_url):
    """An answer slower than the configured timeout is cut off as transient."""
    await _fault(standin_url, mode="none", latency_ms=1500)
    sink = ZepSink(_settings(standin_url, timeout=0.3))
    try:
        with pytest.raises(SinkUnavailableError, match="timed out"):
            await sink.ensure_session(user_id="a", session_id="s", agent="e")
    finally:
        await sink.aclose()


def test_describe_never_shows_credentials():
    """The status description keeps scheme, host and port only."""
    sink = ZepSink(_settings("https://user:pw@zep.example:8443/path?key=x"))
    assert sink.describe() == {"kind": "zep-v2", "url": "https://zep.example:8443"}


ODD_USER_IDS = [
    "a/b",
    "x?y=1#z",
    "aad:a/b",
    "%2F",
    "a b",
    ".",
    "..",
    "~",
    "Zoë 用户 \U0001f600",
    "x" * 512,
]


@pytest.mark.parametrize("user_id", ODD_USER_IDS)
async def test_any_user_id_gets_every_session_delivered(sink, standin_url, user_id):
    """A user id with URL-reserved characters keeps working past its first session."""
    for session in ("vs_1", "vs_2"):
        await sink.ensure_session(user_id=user_id, session_id=session, agent="elena")
        uuid = f"6f1c2b1e-0000-4000-8000-00000000000{session[-1]}"
        await sink.add_messages(session, [_message(uuid)])
    async with httpx.AsyncClient() as client:
        counts = (await client.get(f"{standin_url}/_standin/state")).json()["counts"]
    assert (counts["users"], counts["sessions"], counts["messages"]) == (1, 2, 2)


async def test_two_users_whose_ids_differ_only_in_escapes_stay_apart(sink):
    """``a/b`` and its escaped spelling ``a~2Fb`` are two users, never one."""
    await sink.ensure_session(user_id="a/b", session_id="vs_1", agent="elena")
    sink.forget_session("vs_1")
    with pytest.raises(SinkRejectedError, match="another user"):
        await sink.ensure_session(user_id="a~2Fb", session_id="vs_1", agent="elena")


@pytest.mark.parametrize("user_id", ["a/b", "Zoë", "a b"])
async def test_a_session_created_under_the_raw_id_keeps_receiving_turns(sink, standin_url, user_id):
    """A session an older version created under the unmapped id still takes later turns."""
    client = AsyncBaseClient(base_url=f"{standin_url}/api/v2", api_key=KEY, timeout=5)
    await client.user.add(user_id=user_id)
    await client.memory.add_session(session_id="vs_old", user_id=user_id, metadata={})
    await sink.ensure_session(user_id=user_id, session_id="vs_old", agent="elena")
    await sink.add_messages("vs_old", [_message("6f1c2b1e-0000-4000-8000-000000000009")])
    assert [m.content for m in (await client.memory.get("vs_old")).messages] == ["hi"]
