"""One realtime call: an aiortc peer that answers the SDP offer and plays a conversation.

The peer receives the caller's microphone (counting frames), plays audio back in real
time, and on the data channel the caller opened (``oai-events`` for Azure OpenAI,
``voice-live-events`` for Voice Live; see :mod:`engram_voice.emulator.callmode`) emits
server events in that protocol's vocabulary:
every ``turn_interval`` seconds while audio flows, a user turn (speech started/stopped,
the user item, its transcript arriving asynchronously) answered by an assistant turn
(output audio started, transcript deltas and done, output audio stopped).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec
import structlog
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.exceptions import InternalError, InvalidAccessError, InvalidStateError, OperationError

from engram_voice.emulator.audio import AudioSink, ToneTrack
from engram_voice.emulator.callmode import GA_CHANNEL, CallMode, ga_mode, ga_voice
from engram_voice.emulator.events import EventFactory, new_id
from engram_voice.emulator.loopback import loopback_candidates_only, loopback_ice
from engram_voice.emulator.schemas import VOICES
from engram_voice.emulator.script import agent_name, assistant_line, greeting_line, user_line
from engram_voice.emulator.silent import answer_without_media

__all__ = [
    "EVENTS_CHANNEL",
    "MAX_SESSION_SECONDS",
    "CallPacing",
    "OfferRejectedError",
    "RealtimeCall",
]

EVENTS_CHANNEL = GA_CHANNEL
MAX_SESSION_SECONDS = 30 * 60  # Azure ends a realtime session after 30 minutes
_CLOSE_TIMEOUT = 5.0
_MAX_CLIENT_EVENT_BYTES = 1_000_000
_WORDS_PER_DELTA = 3
_IGNORED_CLIENT_EVENTS = frozenset(
    {
        "input_audio_buffer.append",
        "input_audio_buffer.clear",
        "input_audio_buffer.commit",
        "output_audio_buffer.clear",
        "response.cancel",
        "conversation.item.delete",
        "conversation.item.retrieve",
        "conversation.item.truncate",
    }
)
_OFFER_ERRORS = (
    AssertionError,  # aiortc's SDP parser asserts on malformed m= lines
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    InternalError,
    InvalidAccessError,
    InvalidStateError,
    OperationError,
)
_logger = structlog.get_logger("engram_voice.emulator")


class OfferRejectedError(ValueError):
    """The SDP offer cannot be answered (malformed, or no transport aiortc can use)."""


class CallPacing(msgspec.Struct, frozen=True, kw_only=True):
    """How often the emulated conversation takes a turn, and for how many turns."""

    turn_interval_seconds: float
    max_turns: int
    filtered: bool
    max_seconds: float = MAX_SESSION_SECONDS


class RealtimeCall:
    """The emulator's side of one WebRTC call created with an ephemeral key."""

    def __init__(
        self,
        call_id: str,
        session: dict[str, Any],
        pacing: CallPacing,
        *,
        mode: CallMode | None = None,
        control: Callable[[dict[str, Any]], None] | None = None,
        on_closed: Callable[[RealtimeCall], None] | None = None,
        media: bool = True,
    ) -> None:
        self.call_id = call_id
        self.media = media
        """False (``EMULATOR_MEDIA=off``): no peer; the conversation plays to the sideband."""
        self.session = dict(session)
        self.pacing = pacing
        self.mode = mode or ga_mode(filtered=pacing.filtered)
        self.agent = agent_name(session.get("instructions"))
        self.voice = self.mode.voice_name(session) or self.mode.default_voice
        self.session_handler: Callable[[Any, str | None], None] | None = None
        """Handles ``session.update`` instead of the GA rules (a Voice Live control sets it)."""
        self.created_at = time.time()
        self.ended_at: float | None = None
        self.end_reason: str | None = None
        self.connection_state = "new"
        self.turns = 0
        self.idle_ticks = 0
        self.conversation_finished = False
        self.responses = 0
        self.events_sent: Counter[str] = Counter()
        self.events_withheld = 0
        self.client_events: Counter[str] = Counter()
        self.ignored_channels: list[str] = []
        self.observers: list[Callable[[dict[str, Any]], None]] = []
        """Receive every server event unfiltered (the sideband WebSockets of this call)."""
        self.ended = asyncio.Event()
        """Set as soon as the call starts closing."""
        self._on_closed = on_closed
        self._control = control
        self._events = EventFactory(new_id("conv"), self.mode.vocabulary)
        self._pc = RTCPeerConnection(RTCConfiguration(iceServers=[])) if media else None
        self._tone = ToneTrack()
        self._sink = AudioSink()
        self._channel: Any = None
        self._channel_open = asyncio.Event()
        self._speaking = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing: asyncio.Task[None] | None = None
        self._last_item_id: str | None = None
        self.item_said = asyncio.Event()
        """Set once the conversation has its first item."""
        if self._pc is not None:
            self._pc.on("track", self._on_track)
            self._pc.on("datachannel", self._on_datachannel)
            self._pc.on("connectionstatechange", self._on_connection_state)

    @property
    def active(self) -> bool:
        """Return True until the call has been closed."""
        return self.ended_at is None

    async def answer(self, offer_sdp: str) -> str:
        """Apply the caller's SDP offer and return the SDP answer (ICE on 127.0.0.1 only)."""
        if self._pc is None:
            return await self._answer_without_media(offer_sdp)
        offer_sdp, dropped = loopback_candidates_only(offer_sdp)
        if dropped:
            _logger.info(
                "emulator.remote_candidates_dropped", call_id=self.call_id, dropped=dropped
            )
        try:
            with loopback_ice():
                await self._pc.setRemoteDescription(
                    RTCSessionDescription(sdp=offer_sdp, type="offer")
                )
                if any(t.kind == "audio" for t in self._pc.getTransceivers()):
                    self._pc.addTrack(self._tone)
                await self._pc.setLocalDescription(await self._pc.createAnswer())
        except _OFFER_ERRORS as exc:
            await self.close("invalid_offer")
            raise OfferRejectedError(str(exc) or type(exc).__name__) from exc
        self._spawn(self._conversation(), "conversation")
        self._spawn(self._expire(), "expiry")
        answer: str = self._pc.localDescription.sdp
        return answer

    async def _answer_without_media(self, offer_sdp: str) -> str:
        try:
            answer = answer_without_media(offer_sdp)
        except ValueError as exc:
            await self.close("invalid_offer")
            raise OfferRejectedError(str(exc)) from exc
        self.connection_state = "media_off"
        self._spawn(self._conversation(), "conversation")
        self._spawn(self._expire(), "expiry")
        return answer

    def apply_session(self, session: dict[str, Any]) -> None:
        """Replace the session (already validated): the agent and voice follow it."""
        self.session = dict(session)
        self.agent = agent_name(session.get("instructions"))
        self.voice = self.mode.voice_name(session) or self.mode.default_voice

    def emit(self, event: dict[str, Any]) -> None:
        """Send a server event where this call's mode routes it (data channel, control)."""
        self._send(event)

    async def close(self, reason: str) -> None:
        """End the call (idempotent): stop the tasks and the tracks, close the peer."""
        if self._closing is None:
            self._closing = asyncio.create_task(
                self._shutdown(reason), name=f"close-{self.call_id}"
            )
        await asyncio.shield(self._closing)

    def describe(self) -> dict[str, Any]:
        """Return what happened on this call so far, as plain data."""
        channel = self._channel
        return {
            "call_id": self.call_id,
            "agent": self.agent,
            "voice": self.voice,
            "instructions": self.session.get("instructions"),
            "filtered": self.pacing.filtered,
            "protocol": self.mode.vocabulary.name,
            "media": self.media,
            "active": self.active,
            "connection_state": self.connection_state,
            "data_channel": None
            if channel is None
            else {"label": channel.label, "state": channel.readyState},
            "ignored_channels": list(self.ignored_channels),
            "audio_frames_received": self._sink.frames,
            "audio_ms_received": self._sink.audio_ms,
            "audio_frames_sent": self._tone.frames_sent,
            "turns": self.turns,
            "idle_ticks": self.idle_ticks,
            "conversation_finished": self.conversation_finished,
            "responses": self.responses,
            "events_sent": dict(self.events_sent),
            "events_withheld_by_filter": self.events_withheld,
            "client_events": dict(self.client_events),
            "created_at": self.created_at,
            "ended_at": self.ended_at,
            "end_reason": self.end_reason,
        }

    # -- peer connection callbacks -------------------------------------------------------

    def _on_track(self, track: Any) -> None:
        if track.kind == "audio":
            self._spawn(self._sink.consume(track), "microphone")

    def _on_datachannel(self, channel: Any) -> None:
        if channel.label != self.mode.label or self._channel is not None:
            self.ignored_channels.append(str(channel.label))
            _logger.warning(
                "emulator.data_channel_ignored", call_id=self.call_id, label=channel.label
            )
            return
        self._channel = channel
        channel.on("message", self._on_client_message)
        self._channel_open.set()
        if self.mode.greet_on_channel:
            self._send(self._events.session_created(self._session_object()))

    def _on_connection_state(self) -> None:
        if self._pc is None:  # only a peer reports connection states
            return
        self.connection_state = str(self._pc.connectionState)
        _logger.info(
            "emulator.call_state", call_id=self.call_id, connection_state=self.connection_state
        )
        if self.connection_state in {"failed", "closed"} and self._closing is None:
            self._closing = asyncio.create_task(
                self._shutdown(f"connection_{self.connection_state}"),
                name=f"close-{self.call_id}",
            )

    # -- the conversation ----------------------------------------------------------------

    async def _conversation(self) -> None:
        if self.media:
            await self._channel_open.wait()
        loop = asyncio.get_running_loop()
        next_turn = loop.time()
        while self.turns < self.pacing.max_turns:
            if self.media:
                await asyncio.sleep(self.pacing.turn_interval_seconds)
            else:  # a fixed cadence: a turn starts every interval, however long the last took
                next_turn += self.pacing.turn_interval_seconds
                await asyncio.sleep(max(0.0, next_turn - loop.time()))
            if self.media and not self._sink.flowing(within=2.0):
                self.idle_ticks += 1  # no microphone audio: the user is not talking
                continue
            self.turns += 1
            async with self._speaking:
                await self._play_turn(self.turns)
        self.conversation_finished = True

    async def _play_turn(self, turn: int) -> None:
        user_item = new_id("item")
        speech_ms = int(min(1500.0, 600 * self.pacing.turn_interval_seconds))
        end_ms = self._sink.audio_ms
        self._send(self._events.speech_started(user_item, max(0, end_ms - speech_ms)))
        self._send(self._events.speech_stopped(user_item, end_ms))
        previous, self._last_item_id = self._last_item_id, user_item
        self.item_said.set()
        self._send(self._events.committed(user_item, previous))
        item = EventFactory.user_item(user_item)
        self._send(self._events.item_added(item, previous))
        self._send(self._events.item_done(item, previous))
        await self._respond(
            assistant_line(turn, self.agent), transcribe=(user_item, user_line(turn, self.agent))
        )

    async def _respond(self, text: str, transcribe: tuple[str, str] | None = None) -> None:
        events = self._events
        response_id, item_id = new_id("resp"), new_id("item")
        self._send(events.response_created(response_id, self.voice))
        previous, self._last_item_id = self._last_item_id, item_id
        self.item_said.set()
        content = events.vocabulary.assistant_content
        started = EventFactory.assistant_item(item_id, content_type=content)
        self._send(events.item_added(started, previous))
        if events.vocabulary.beta_response:
            self._send(events.output_item("added", response_id, started))
        self._send(events.output_audio_started(response_id))
        words = text.split(" ")
        chunks = [
            " ".join(words[i : i + _WORDS_PER_DELTA])
            for i in range(0, len(words), _WORDS_PER_DELTA)
        ]
        pause = min(1.5, 0.4 * self.pacing.turn_interval_seconds) / (len(chunks) + 1)
        self._tone.speaking = True
        try:
            for index, chunk in enumerate(chunks):
                delta = chunk if index == len(chunks) - 1 else f"{chunk} "
                self._send(events.transcript_delta(response_id, item_id, delta))
                if index == 0 and transcribe is not None:
                    # The user's transcript arrives asynchronously, after the answer began.
                    self._send(events.transcription_completed(*transcribe))
                await asyncio.sleep(pause)
            self._send(events.transcript_done(response_id, item_id, text))
            done = EventFactory.assistant_item(item_id, text, content)
            self._send(events.item_done(done, previous))
            if events.vocabulary.beta_response:
                self._send(events.output_item("done", response_id, done))
            self._send(events.response_done(response_id, self.voice, done))
            await asyncio.sleep(pause)
        finally:
            self._tone.speaking = False
        self._send(events.output_audio_stopped(response_id))
        self.responses += 1

    async def _requested_response(self) -> None:
        async with self._speaking:
            await self._respond(greeting_line(self.agent))

    async def _expire(self) -> None:
        await asyncio.sleep(self.pacing.max_seconds)
        _logger.info("emulator.call_expired", call_id=self.call_id)
        await self.close("session_expired")

    # -- client events -------------------------------------------------------------------

    def handle_client_event(self, event: dict[str, Any]) -> None:
        """Handle one decoded client event (from the data channel or a control channel)."""
        event_type: str = event["type"]
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        self.client_events[event_type] += 1
        if event_type == "session.update":
            if self.session_handler is not None:
                self.session_handler(event.get("session"), client_event_id)
            else:
                self._update_session(event.get("session"), client_event_id)
        elif event_type == "response.create":
            self._spawn(self._requested_response(), "response")
        elif event_type == "conversation.item.create":
            self._create_item(event, client_event_id)
        elif event_type not in _IGNORED_CLIENT_EVENTS:
            self._reject(
                client_event_id,
                f"Invalid value: '{event_type}' is not a client event.",
                "invalid_value",
            )

    def reject(self, client_event_id: str | None, message: str, code: str) -> None:
        """Answer a refused client event with an ``error`` event."""
        self._reject(client_event_id, message, code)

    def _on_client_message(self, message: str | bytes) -> None:
        if len(message) > _MAX_CLIENT_EVENT_BYTES:
            self._reject(None, "Client event is too large.", "invalid_value")
            return
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            self._reject(None, "Client event is not valid JSON.", "invalid_json")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self._reject(None, "Client event must be an object with a 'type'.", "invalid_value")
            return
        self.handle_client_event(event)

    def _update_session(self, session: Any, client_event_id: str | None) -> None:
        if not isinstance(session, dict) or session.get("type", "realtime") != "realtime":
            self._reject(
                client_event_id, "session.update needs a realtime 'session'.", "invalid_value"
            )
            return
        if isinstance(session.get("instructions"), str):
            self.session["instructions"] = session["instructions"]
            self.agent = agent_name(session["instructions"])
        voice = ga_voice(session)
        if voice is not None:
            if voice not in VOICES:
                self._reject(client_event_id, f"Unsupported voice '{voice}'.", "invalid_value")
                return
            self.voice = voice
        self._send(self._events.session_updated(self._session_object()))

    def _create_item(self, event: dict[str, Any], client_event_id: str | None) -> None:
        item = event.get("item")
        if not isinstance(item, dict):
            self._reject(
                client_event_id, "conversation.item.create needs an 'item'.", "invalid_value"
            )
            return
        item_id = item.get("id") if isinstance(item.get("id"), str) else new_id("item")
        created = {**item, "id": item_id, "object": "realtime.item"}
        created.setdefault("status", "completed")
        previous = event.get("previous_item_id") or self._last_item_id
        self._last_item_id = item_id
        self.item_said.set()
        self._send(self._events.item_added(created, previous))
        self._send(self._events.item_done(created, previous))

    def _reject(self, client_event_id: str | None, message: str, code: str) -> None:
        _logger.info("emulator.client_event_rejected", call_id=self.call_id, code=code)
        self._send(self._events.error(message, code, client_event_id))

    # -- plumbing ------------------------------------------------------------------------

    def _session_object(self) -> dict[str, Any]:
        session = dict(self.session)
        audio = dict(session.get("audio") or {})
        audio["output"] = {**(audio.get("output") or {}), "voice": self.voice}
        session["audio"] = audio
        return session

    def _send(self, event: dict[str, Any] | None) -> None:
        if event is None:  # an event the call's vocabulary does not have
            return
        for observer in tuple(self.observers):
            observer(event)
        event_type = event["type"]
        to_channel, to_control = self.mode.routes(event_type)
        if to_control and self._control is not None:
            self._control(event)
        if not to_channel:
            if not to_control:
                self.events_withheld += 1
            return
        channel = self._channel
        if channel is None or channel.readyState != "open":
            return
        channel.send(msgspec.json.encode(event).decode())
        self.events_sent[event_type] += 1

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coroutine, name=f"{name}-{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            _logger.error(
                "emulator.call_task_failed",
                call_id=self.call_id,
                task=task.get_name(),
                error=type(error).__name__,
                exc_info=error,
            )

    async def _shutdown(self, reason: str) -> None:
        self.ended_at = time.time()
        self.end_reason = reason
        self.ended.set()
        self._tone.speaking = False
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        self._tone.stop()
        if self._pc is not None:
            try:
                await asyncio.wait_for(self._pc.close(), _CLOSE_TIMEOUT)
            except TimeoutError:
                _logger.warning("emulator.call_close_timeout", call_id=self.call_id)
        if tasks:
            await asyncio.wait(tasks, timeout=_CLOSE_TIMEOUT)
        self.connection_state = "closed" if self._pc is None else str(self._pc.connectionState)
        _logger.info(
            "emulator.call_ended",
            call_id=self.call_id,
            reason=reason,
            turns=self.turns,
            audio_frames_received=self._sink.frames,
        )
        if self._on_closed is not None:
            self._on_closed(self)
