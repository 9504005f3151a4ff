"""Call set-up records, in the shared queue, that the server will hear the session itself.

The record is written before the memory token is handed out, so no replica can ever see a
post for a captured call's session without it; when it cannot be stored the call keeps its
token and never claims the session (the browser is its source). A stand-in upstream
opens the calls (no network).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from engram_voice.agents import Agent
from engram_voice.app import create_app
from engram_voice.memory.sqlite_queue import SqliteTurnQueue
from engram_voice.services import Overrides
from engram_voice.settings import Settings
from tests.support.calls import MINIMAL_OFFER, HeaderUsers

WINDOW = 12.0
CALLS: list[StandInCall] = []
"""Every call the stand-in upstream opened (the test reads what the service told it)."""


class StandInCall:
    """An opened call whose capture may come up (``window`` seconds), or never (None)."""

    def __init__(self, window: float | None) -> None:
        self.sdp_answer = "v=0\r\n"
        self.upstream_call_id = "rtc_standin"
        self.capture = object()
        self._window = window
        self._closed = asyncio.Event()
        self.authority = True
        CALLS.append(self)

    def forgo_authority(self) -> None:
        """Never claim the session (as Voice Live's call does)."""
        self.authority = False

    def capture_window(self) -> float | None:
        """Return how long capture may take to come up (None: from the first transcript)."""
        return self._window

    def bind_owner(self, sink: Any, **owner: Any) -> None:
        """Accept the owner (the stand-in hears nothing)."""

    async def hangup(self, reason: str) -> None:  # noqa: ARG002 - the protocol's signature
        """End the call."""
        self._closed.set()

    async def wait_closed(self) -> str:
        """Return once hung up."""
        await self._closed.wait()
        return "hangup"


class StandInUpstream:
    """Opens :class:`StandInCall` calls."""

    name = "azure-openai"

    def __init__(self, window: float | None) -> None:
        self._window = window

    async def open(self, *, agent: Agent, sdp_offer: str, session_id: str) -> StandInCall:  # noqa: ARG002
        """Return a new call."""
        return StandInCall(self._window)


@contextlib.contextmanager
def write_locked(path: Path) -> Iterator[None]:
    """Hold the queue file's write lock, as a stuck writer in another process would."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def create_call(env: dict[str, str], window: float | None, *, locked: bool) -> dict[str, Any]:
    """Serve the app with the stand-in upstream and set up one call; return the answer."""
    overrides = Overrides(
        authenticator=HeaderUsers(), call_upstreams={"azure-openai": StandInUpstream(window)}
    )
    with TestClient(create_app(Settings.from_env(env), overrides=overrides)) as client:
        with write_locked(Path(env["MEMORY_SQLITE_PATH"])) if locked else contextlib.nullcontext():
            answer = client.post(
                "/realtime/calls",
                json={"agent": "elena", "sdp_offer": MINIMAL_OFFER},
                headers={"X-Test-User": "alice"},
            )
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        client.delete(f"/realtime/calls/{body['call_id']}", headers={"X-Test-User": "alice"})
    return body


async def stored_state(path: Path, session_id: str) -> tuple[str, float | None] | None:
    """Read the session's capture record from the queue file."""
    queue = SqliteTurnQueue(path)
    await queue.open()
    try:
        found = await queue.capture_state(session_id)
    finally:
        await queue.close()
    return None if found is None else (found.state, found.state_until)


@pytest.mark.parametrize(("window", "state"), [(WINDOW, "expected"), (None, "browser")])
def test_a_call_is_recorded_before_its_memory_token_is_handed_out(
    app_env: dict[str, str], window: float | None, state: str
) -> None:
    """A sideband call is ``expected`` (with its deadline), a Voice Live one ``browser``."""
    started = time.time()
    body = create_call(app_env, window, locked=False)
    assert body["memory"]["token"]
    found = asyncio.run(stored_state(Path(app_env["MEMORY_SQLITE_PATH"]), body["session_id"]))
    assert found is not None
    # the hang-up before capture came up moves nothing back: the stand-in has no sideband
    assert found[0] == state
    if window is None:
        assert found[1] is None
    else:
        assert found[1] is not None
        assert started + window <= found[1] <= time.time() + window


@pytest.mark.parametrize("window", [WINDOW, None], ids=["sideband", "voice-live"])
def test_a_call_whose_record_cannot_be_stored_keeps_its_token_and_stays_the_browsers(
    app_env: dict[str, str], window: float | None
) -> None:
    """With the queue locked past its bound a call keeps its token and never claims the session.

    Without the token every turn would rest on the server's own capture, whose store fails
    while the queue does (PostgreSQL down at start-up); the browser's outbox retries.
    """
    env = {**app_env, "MEMORY_STORE_TIMEOUT_SECONDS": "0.2"}
    body = create_call(env, window, locked=True)
    assert body["memory"]["token"]
    assert CALLS[-1].authority is False
