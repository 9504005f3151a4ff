"""The service's side of a call captured in the capture process: mirrors of its state.

:class:`RemoteSideband` and :class:`RemoteCapture` stand in for the
:class:`~engram_voice.realtime.calls.sideband.Sideband` and
:class:`~engram_voice.realtime.calls.capture.TurnCapture` an
:class:`~engram_voice.realtime.calls.azure_openai.AzureOpenAICall` holds: the same
attributes, hooks and methods, with the state mirrored from the capture process's
messages in the order it sent them, so the call's capture rules
(``AzureOpenAICall.bind_owner``) run unchanged on the service's loop, and only the few
messages that change what they decide cross the pipe. When the capture process exits,
every sideband it held reads as ``lost`` (nobody hears those calls any more).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog

from engram_voice.memory.schemas import EnrichMessage
from engram_voice.realtime.calls.capture import CaptureSink, StoreTurns, UsageHook, owner_store
from engram_voice.realtime.calls.capture_wire import (
    Began,
    Bind,
    Ended,
    Gap,
    Message,
    State,
    StopReconnecting,
    Usage,
)

__all__ = ["RemoteCapture", "RemoteSideband", "Requester", "mirror", "to_messages"]

CLOSE_SECONDS = 5.0
"""The capture process's own bound on closing a socket, and on flushing a capture."""
_logger = structlog.get_logger("engram_voice.realtime.calls")


class Requester(Protocol):
    """What the proxies need of the capture process: messages and requests."""

    def send(self, message: Message) -> None:
        """Queue a message to the capture process."""
        ...

    async def request(self, op: str, call: str, body: Any = None, *, within: float) -> Any:
        """Ask the capture process and return its answer's body."""
        ...

    def forget(self, call: str) -> None:
        """Drop ``call`` from the calls held (its capture is closed)."""
        ...


class RemoteSideband:
    """A sideband held in the capture process, as the call sees it."""

    def __init__(self, process: Requester, call: str) -> None:
        self._process = process
        self._call = call
        self._closing = False
        self.connected = asyncio.Event()
        """Set once the first upgrade succeeded."""
        self.ended = asyncio.Event()
        """Set when the sideband learnt that the call is over upstream."""
        self.state = "new"
        """new, connected, reconnecting, lost, call_over or closed."""
        self.on_state: Callable[[str], None] | None = None
        self.on_ended: Callable[[], None] | None = None

    def start(self) -> None:
        """Nothing to do: the capture process joined the sideband when the call was held."""

    def stop_reconnecting(self) -> None:
        """Keep reading, but do not reopen once the upstream closes (a hang-up is under way)."""
        if not self._closing:
            self._closing = True
            self._process.send(StopReconnecting(call=self._call))

    def stopping(self) -> bool:
        """Return True once the sideband is being closed."""
        return self._closing

    async def finish(self, grace: float = 2.0) -> None:
        """Read what the upstream still sends (``grace`` at most), then close; bounded."""
        self._closing = True
        await self._end("finish", grace)

    async def close(self) -> None:
        """Close the socket and stop (idempotent, bounded)."""
        self._closing = True
        await self._end("finish", 0.0)

    async def send(self, event: dict[str, Any]) -> bool:
        """Send one client event (e.g. ``session.update``); False when not connected."""
        if self.state != "connected":
            return False
        try:
            return bool(
                await self._process.request("send", self._call, event, within=CLOSE_SECONDS + 1)
            )
        except (ConnectionError, TimeoutError, RuntimeError):
            return False

    async def _end(self, op: str, grace: float) -> None:
        try:
            state = await self._process.request(
                op, self._call, grace, within=grace + CLOSE_SECONDS + 1
            )
        except (ConnectionError, TimeoutError, RuntimeError):
            state = "closed"
        if self.state not in {"lost", "call_over"}:
            self.state = state if state in {"lost", "call_over"} else "closed"

    # -- mirrored from the capture process ------------------------------------------------

    def mirror_state(self, state: str, told: str | None) -> None:
        """Take the state the sideband reached, and tell the owner what it was told."""
        self.state = state
        if state == "connected":
            self.connected.set()
        if told is not None and self.on_state is not None:
            try:
                self.on_state(told)
            except Exception:
                _logger.exception("realtime.sideband_state_hook_failed", state=told)

    def mirror_ended(self) -> None:
        """Take the news that the call is over upstream."""
        self.state = "call_over"
        self.ended.set()
        if self.on_ended is not None:
            self.on_ended()

    def process_gone(self) -> None:
        """Read as lost: the capture process exited, so nobody hears this call any more."""
        if self.state in {"lost", "call_over", "closed"}:
            return
        if self._closing:
            self.state = "closed"
            return
        self.mirror_state("lost", "lost")


def to_messages(rows: Sequence[Sequence[Any]]) -> list[EnrichMessage]:
    """Rebuild the turns a ``store`` request carries: ``[id, role, text, at]`` rows."""
    messages = []
    for item_id, role, text, at in rows:
        when = dt.datetime.fromisoformat(at) if isinstance(at, str) else None
        if role == "user":
            messages.append(EnrichMessage(id=item_id, role="user", text=text, at=when))
        else:
            messages.append(EnrichMessage(id=item_id, role="assistant", text=text, at=when))
    return messages


class RemoteCapture:
    """A transcript capture running in the capture process, as the call sees it."""

    def __init__(
        self, process: Requester, call: str, *, session_id: str, on_usage: UsageHook | None
    ) -> None:
        self._process = process
        self._call = call
        self._on_usage = on_usage
        self.call_id = call
        self.session_id = session_id
        self.usage_call_id = session_id
        """The id usage is reported under (the service's call id once bound)."""
        self.keep_turns = True
        self.began: bool | None = None
        self.on_began: Callable[[bool], None] | None = None
        self.on_gap: Callable[[], None] | None = None
        self.store: StoreTurns | None = None
        """Where the turns the capture process hands over go, once the owner is known."""
        self.owner: tuple[CaptureSink, str, str, str] | None = None
        """``(sink, session id, user id, agent)`` that :attr:`store` stores for, once known
        (the service stores one frame's turns of many calls together)."""
        self._closed = False

    def bind_owner(
        self,
        sink: CaptureSink | None,
        *,
        session_id: str,
        user_id: str,
        agent_id: str,
        call_id: str | None = None,
    ) -> bool:
        """Report usage under ``call_id`` and store turns in ``sink`` for this owner.

        Returns False when there is no sink (memory disabled: usage only, no turns kept).
        """
        if call_id is not None:
            self.usage_call_id = call_id
        if sink is None:
            self.keep_turns = False
            self._process.send(Bind(call=self._call, keep=False))
            return False
        self.store = owner_store(sink, session_id=session_id, user_id=user_id, agent_id=agent_id)
        self.owner = (sink, session_id, user_id, agent_id)
        self._process.send(Bind(call=self._call, keep=True))
        return True

    async def close(self) -> None:
        """Store what the capture still holds (bounded), close it and forget the call.

        If the capture process does not confirm the close (it died or stopped answering),
        the turns it still held may never be stored: the session is handed to the
        browser (a gap), as the in-process capture does when its last store fails.
        """
        if self._closed:
            return
        self._closed = True
        try:
            await self._process.request("close", self._call, within=2 * CLOSE_SECONDS + 1)
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            _logger.warning(
                "realtime.capture_close_failed", call=self._call, error=type(exc).__name__
            )
            self.mirror_gap()
        finally:
            self._process.forget(self._call)

    # -- mirrored from the capture process ------------------------------------------------

    def mirror_began(self, began: bool) -> None:
        """Take whether the first item showed the sideband heard the conversation begin."""
        self.began = began
        hook, self.on_began = self.on_began, None
        if hook is not None:
            try:
                hook(began)
            except Exception:
                _logger.exception("realtime.capture_began_hook_failed", call=self._call)

    def mirror_gap(self) -> None:
        """Take the news that a heard turn will not be stored (once: the fallback is final)."""
        hook, self.on_gap = self.on_gap, None
        if hook is not None:
            try:
                hook()
            except Exception:
                _logger.exception("realtime.capture_gap_hook_failed", call=self._call)

    def usage(self, body: dict[str, Any]) -> None:
        """One ``response.done``'s usage, reported under :attr:`usage_call_id`."""
        if self._on_usage is not None:
            self._on_usage(self.usage_call_id, body)


def mirror(capture: RemoteCapture, sideband: RemoteSideband, message: object) -> None:
    """Apply one message the capture process sent about this call to its mirrors."""
    if isinstance(message, Usage):
        capture.usage(message.usage)
    elif isinstance(message, State):
        sideband.mirror_state(message.state, message.told)
    elif isinstance(message, Began):
        capture.mirror_began(message.began)
    elif isinstance(message, Gap):
        capture.mirror_gap()
    elif isinstance(message, Ended):
        sideband.mirror_ended()
