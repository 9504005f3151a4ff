"""The Zep v4 sink on two replicas sharing one sink state store (SQLite file, PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.memory.postgres_sink_state import PostgresSinkState
from engram_voice.memory.settings import ZepSettings
from engram_voice.memory.sink import SinkMessage, SinkSession
from engram_voice.memory.sink_state import SinkStateStore
from engram_voice.memory.sqlite_sink_state import SqliteSinkState
from engram_voice.memory.zep_cloud_sink import ZepCloudSink
from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin

SESSION = SinkSession(session_id="vs_1", user_id="alice", agent="elena")


class StaleReads:
    """A replica's store whose reads of some ids come before the other replica's write."""

    def __init__(self, inner: SinkStateStore, kinds: set[str]) -> None:
        self._inner = inner
        self._kinds = kinds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_id(self, kind: str, our_id: str) -> str | None:
        """Find nothing stored for the racing kinds (not committed yet when read)."""
        return None if kind in self._kinds else await self._inner.get_id(kind, our_id)


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve a stand-in that forgets idempotency keys at once (every create is new)."""
    with zep_v4_standin(tmp_path, idempotency_ttl_s=0) as standin:
        yield standin


@pytest.fixture(
    name="make_state", params=["sqlite", pytest.param("postgres", marks=pytest.mark.process)]
)
def fixture_make_state(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], SinkStateStore]:
    """Return a factory of stores on one shared storage (one per replica)."""
    if request.param == "sqlite":
        return lambda: SqliteSinkState(tmp_path / "queue.sqlite3", sink="zep-v4")
    server = request.getfixturevalue("postgres_server")
    conninfo = server.conninfo(server.new_database("replicas"))
    return lambda: PostgresSinkState(conninfo, sink="zep-v4", pool_size=2)


def _message(mid: str) -> SinkMessage:
    return SinkMessage(
        message_id=mid,
        part=0,
        parts=1,
        role="user",
        name="user",
        content=f"said {mid}",
        at=None,
        accepted_at=1.0,
    )


async def _nothing() -> None:
    return None


@pytest.mark.parametrize("racing", ["user", "thread", "both"])
async def test_replicas_that_create_ids_at_once_write_into_the_one_stored(
    zep: ZepV4StandIn, make_state: Callable[[], SinkStateStore], racing: str
):
    """A replica that created its own Zep user/thread in a race writes into the stored ones."""
    settings = ZepSettings(
        api_url=zep.base_url,
        api_key=Secret(zep.api_key),
        timeout_seconds=5.0,
        connect_timeout_seconds=1.0,
        max_message_chars=4096,
        api="v4",
    )
    first_state, second_state = make_state(), make_state()
    await first_state.open()
    await second_state.open()
    kinds = {"user", "thread"} if racing == "both" else {racing}
    late = cast("SinkStateStore", StaleReads(second_state, kinds))
    first, second = ZepCloudSink(settings, first_state), ZepCloudSink(settings, late)
    try:
        await first.deliver(SESSION, [_message("a")], _nothing)
        await second.deliver(SESSION, [_message("b")], _nothing)
        await first.deliver(SESSION, [_message("c")], _nothing)
        client = zep.client()
        user = await client.user.lookup(user_id="alice")
        stored_user = await first_state.get_id("user", "alice")
        stored_thread = await first_state.get_id("thread", "vs_1")
        assert str(user.uuid_) == stored_user
        threads = await client.thread.list(user_uuid=stored_user, page_size=100)
        contents: dict[str, list[str]] = {}
        for thread in threads.items or []:
            pager = await client.thread.list_messages(str(thread.uuid_), page_size=100)
            contents[str(thread.uuid_)] = [m.content or "" async for m in pager]
        written = {uuid: said for uuid, said in contents.items() if said}
        assert written == {stored_thread: ["said a", "said b", "said c"]}
    finally:
        for sink in (first, second):
            await sink.aclose()
        await first_state.close()
        await second_state.close()
