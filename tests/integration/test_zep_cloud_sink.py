"""The Zep v4 sink's own rules, through the real zep-cloud SDK against the stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.memory.settings import ZepSettings
from engram_voice.memory.sink import (
    SinkMessage,
    SinkRejectedError,
    SinkSession,
    SinkUnavailableError,
)
from engram_voice.memory.sqlite_sink_state import SqliteSinkState
from engram_voice.memory.zep_cloud_sink import ZepCloudSink
from tests.support.servers import free_port
from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the Zep stand-in on loopback."""
    with zep_v4_standin(tmp_path) as standin:
        yield standin


def _settings(url: str, key: str, timeout: float = 5.0) -> ZepSettings:
    return ZepSettings(
        api_url=url,
        api_key=Secret(key),
        timeout_seconds=timeout,
        connect_timeout_seconds=1.0,
        max_message_chars=4096,
        api="v4",
    )


class Sinks:
    """Builds v4 sinks sharing one state file (a new one is a restarted process)."""

    def __init__(self, zep: ZepV4StandIn, path: Path) -> None:
        self.zep = zep
        self.path = path
        self.opened: list[tuple[ZepCloudSink, SqliteSinkState]] = []

    async def new(self, *, key: str | None = None, url: str | None = None) -> ZepCloudSink:
        """Return a sink on a freshly opened state store."""
        state = SqliteSinkState(self.path, sink="zep-v4")
        await state.open()
        sink = ZepCloudSink(_settings(url or self.zep.base_url, key or self.zep.api_key), state)
        self.opened.append((sink, state))
        return sink

    async def close(self) -> None:
        """Close every sink and store."""
        for sink, state in self.opened:
            await sink.aclose()
            await state.close()


@pytest.fixture(name="sinks")
async def fixture_sinks(zep: ZepV4StandIn, tmp_path: Path) -> AsyncIterator[Sinks]:
    """Return a factory of v4 sinks over one state file."""
    sinks = Sinks(zep, tmp_path / "queue.sqlite3")
    yield sinks
    await sinks.close()


def _session(session_id: str = "vs_1", user_id: str = "alice") -> SinkSession:
    return SinkSession(session_id=session_id, user_id=user_id, agent="elena")


def _messages(*ids: str) -> list[SinkMessage]:
    return [
        SinkMessage(
            message_id=i,
            part=0,
            parts=1,
            role="user",
            name="user",
            content=f"said {i}",
            at="2026-11-29T10:00:00+00:00",
            accepted_at=1.0,
        )
        for i in ids
    ]


async def _nothing() -> None:
    """Keep the (test's) lease: nothing to do."""


async def _contents(zep: ZepV4StandIn, user_id: str = "alice") -> list[str]:
    client = zep.client()
    user = await client.user.lookup(user_id=user_id)
    threads = await client.thread.list(user_uuid=str(user.uuid_), page_size=100)
    contents: list[str] = []
    for thread in threads.items or []:
        pager = await client.thread.list_messages(str(thread.uuid_), page_size=1000)
        contents.extend([m.content or "" async for m in pager])
    return contents


def _calls(zep: ZepV4StandIn, name: str) -> int:
    calls: dict[str, int] = zep.state()["calls"]
    return calls.get(name, 0)


async def test_users_and_threads_are_created_once_and_remembered_across_restarts(sinks, zep):
    """One user per user id, one thread per session, kept in the queue's database."""
    sink = await sinks.new()
    await sink.deliver(_session("vs_1"), _messages("a"), _nothing)
    await sink.deliver(_session("vs_1"), _messages("b"), _nothing)
    await sink.deliver(_session("vs_2"), _messages("c"), _nothing)
    restarted = await sinks.new()
    await restarted.deliver(_session("vs_1"), _messages("d"), _nothing)
    assert (_calls(zep, "v4.users.create"), _calls(zep, "v4.threads.create")) == (1, 2)
    assert sorted(await _contents(zep)) == ["said a", "said b", "said c", "said d"]


async def test_messages_carry_role_name_reference_time_and_our_ids(sinks, zep):
    """Each message has role and name, the turn's time, and our turn and session ids."""
    sink = await sinks.new()
    await sink.deliver(_session(), _messages("a"), _nothing)
    client = zep.client()
    user = await client.user.lookup(user_id="alice")
    threads = await client.thread.list(user_uuid=str(user.uuid_))
    pager = await client.thread.list_messages(str((threads.items or [])[0].uuid_))
    stored = [m async for m in pager]
    assert [(m.role, m.name, m.content) for m in stored] == [("user", "user", "said a")]
    assert stored[0].metadata == {"message_id": "a", "session_id": "vs_1", "agent": "elena"}
    assert stored[0].reference_time is not None
    assert stored[0].reference_time.startswith("2026-11-29T10:00:00")


@pytest.mark.parametrize("deleted", ["thread", "user"])
async def test_a_thread_or_user_deleted_in_zep_is_recreated_once(sinks, zep, deleted):
    """A 404 for the stored thread (or its user) recreates it and delivers the batch there."""
    sink = await sinks.new()
    await sink.deliver(_session(), _messages("a"), _nothing)
    client = zep.client()
    user = await client.user.lookup(user_id="alice")
    if deleted == "user":
        await client.user.delete(str(user.uuid_))
    else:
        threads = await client.thread.list(user_uuid=str(user.uuid_))
        await client.thread.delete(str((threads.items or [])[0].uuid_))
    await sink.deliver(_session(), _messages("b"), _nothing)
    assert await _contents(zep) == ["said b"]
    counts = zep.state()["counts"]
    assert (counts["v4_users"], counts["v4_threads"]) == (1, 1)


async def test_a_stored_id_zep_cannot_read_is_a_permanent_rejection(sinks, zep, tmp_path):
    """400 invalid_identifier (e.g. an id kept from an older API) is refused for good."""
    state = SqliteSinkState(tmp_path / "queue.sqlite3", sink="zep-v4")
    await state.open()
    await state.put_id("thread", "vs_1", "thread-of-v3", now=1.0)
    await state.close()
    sink = await sinks.new()
    with pytest.raises(SinkRejectedError, match="invalid_identifier") as raised:
        await sink.deliver(_session(), _messages("a"), _nothing)
    assert raised.value.status == 400
    assert zep.api_key not in raised.value.reason


async def test_the_sdk_does_not_retry_on_its_own(sinks, zep):
    """One failing call is one HTTP call: the delivery's retry policy is the only one."""
    sink = await sinks.new()
    await sink.deliver(_session(), _messages("a"), _nothing)
    zep.fault(mode="error", count=5)
    with pytest.raises(SinkUnavailableError) as raised:
        await sink.deliver(_session(), _messages("b"), _nothing)
    assert raised.value.status == 500
    assert _calls(zep, "v4.messages.add") == 2


async def test_a_refused_key_is_transient_and_names_the_setting(sinks):
    """401 keeps the turns queued and tells the operator to check ZEP_API_KEY."""
    sink = await sinks.new(key="wrong-key-0123456789")
    with pytest.raises(SinkUnavailableError, match="ZEP_API_KEY") as raised:
        await sink.deliver(_session(), _messages("a"), _nothing)
    assert raised.value.status == 401
    assert "wrong-key" not in raised.value.reason


async def test_an_unreachable_zep_is_transient(sinks):
    """Nothing listening is a transient failure."""
    sink = await sinks.new(url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(SinkUnavailableError, match="unreachable"):
        await sink.deliver(_session(), _messages("a"), _nothing)


@pytest.mark.parametrize("user_id", ["x" * 500, "x" * 501, "y" * 512, "sha256:abc", "Zoë a/b"])
async def test_any_usable_user_id_gets_a_zep_user(sinks, zep, user_id):
    """User ids up to our 512 characters (Zep takes 500) each get their own Zep user."""
    sink = await sinks.new()
    await sink.deliver(_session(user_id=user_id), _messages("a"), _nothing)
    assert _calls(zep, "v4.users.create") == 1
    assert zep.state()["counts"]["v4_messages"] == 1


def test_describe_never_shows_credentials(tmp_path):
    """The status description keeps scheme, host and port only."""
    sink = ZepCloudSink(
        _settings("https://user:pw@api.getzep.com:443/x?key=y", "k" * 20),
        SqliteSinkState(tmp_path / "q.sqlite3", sink="zep-v4"),
    )
    assert sink.describe() == {"kind": "zep-v4", "url": "https://api.getzep.com:443"}
    assert "k" * 20 not in repr(sink)
