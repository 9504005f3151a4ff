"""Realtime server events as the data channel carries them, with unique ids.

Each builder returns one event as plain data. The names come from a :class:`Vocabulary`:
:data:`GA_EVENTS` is Azure OpenAI's GA protocol (shaped like the ``openai.types.realtime``
models), :data:`VOICE_LIVE_EVENTS` the older (beta) names that Azure Voice Live's dated
api-versions use (``response.audio_transcript.done``, ``conversation.item.created``).
:data:`WEBRTC_FILTERED_EVENTS` is what Azure OpenAI lets through to a browser that
connected with ``webrtcfilter=on``; :data:`VOICE_LIVE_CHANNEL_EVENTS` is what Voice Live
routes to the ``voice-live-events`` data channel (the rest goes to the control WebSocket).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GA_EVENTS",
    "VOICE_LIVE_CHANNEL_EVENTS",
    "VOICE_LIVE_EVENTS",
    "WEBRTC_FILTERED_EVENTS",
    "EventFactory",
    "Vocabulary",
    "new_id",
    "response_usage",
]


@dataclass(frozen=True, kw_only=True)
class Vocabulary:
    """The names (and response shape) one protocol gives to the same conversation events."""

    name: str
    item_added: str
    item_done: str | None
    transcript_delta: str
    transcript_done: str
    assistant_content: str
    beta_response: bool


GA_EVENTS = Vocabulary(
    name="ga",
    item_added="conversation.item.added",
    item_done="conversation.item.done",
    transcript_delta="response.output_audio_transcript.delta",
    transcript_done="response.output_audio_transcript.done",
    assistant_content="output_audio",
    beta_response=False,
)
VOICE_LIVE_EVENTS = Vocabulary(
    name="voice-live",
    item_added="conversation.item.created",
    item_done=None,  # the beta protocol has no conversation.item.done
    transcript_delta="response.audio_transcript.delta",
    transcript_done="response.audio_transcript.done",
    assistant_content="audio",
    beta_response=True,
)
VOICE_LIVE_CHANNEL_EVENTS = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "response.created",
        "response.done",
        "conversation.item.input_audio_transcription.delta",
        "conversation.item.input_audio_transcription.completed",
        "response.audio_transcript.delta",
        "response.audio_transcript.done",
        "response.text.delta",
        "response.text.done",
        "conversation.item.created",
        "response.output_item.added",
        "response.output_item.done",
        "output_audio_buffer.started",  # preview events, seen on the data channel
        "output_audio_buffer.stopped",
    }
)

WEBRTC_FILTERED_EVENTS = frozenset(
    {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.added",
        "conversation.item.created",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
    }
)


def new_id(prefix: str) -> str:
    """Return a unique id like Azure's, e.g. ``item_3f9a…``."""
    return f"{prefix}_{secrets.token_hex(10)}"


def _usage(text: str) -> dict[str, Any]:
    output_tokens = max(1, len(text.split()))
    audio_tokens = 10 * output_tokens
    return {
        "type": "tokens",
        "input_tokens": audio_tokens,
        "output_tokens": output_tokens,
        "total_tokens": audio_tokens + output_tokens,
        "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
    }


def response_usage(text: str, context_tokens: int) -> dict[str, Any]:
    """Return a GA ``response.usage`` for an answer ``text`` after ``context_tokens`` of history.

    Shaped like ``openai.types.realtime.RealtimeResponseUsage``: the input counts the
    conversation so far (audio mostly, part of it cached), the output the spoken answer
    (about 10 audio tokens per word plus its transcript's text tokens).
    """
    words = max(1, len(text.split()))
    out_text, out_audio = words, 10 * words
    in_audio = max(1, context_tokens)
    in_text = 64  # the instructions
    cached = (in_text + in_audio) // 2 // 64 * 64
    input_tokens = in_text + in_audio
    output_tokens = out_text + out_audio
    return {
        "total_tokens": input_tokens + output_tokens,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "input_token_details": {
            "text_tokens": in_text,
            "audio_tokens": in_audio,
            "cached_tokens": cached,
        },
        "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
    }


class EventFactory:
    """Builds one call's server events; every event gets a fresh ``event_id``."""

    def __init__(self, conversation_id: str, vocabulary: Vocabulary = GA_EVENTS) -> None:
        self.conversation_id = conversation_id
        self.vocabulary = vocabulary
        self.context_tokens = 0
        """Audio tokens of the conversation so far (grows with every answered turn)."""

    def _event(self, event_type: str, **fields: Any) -> dict[str, Any]:
        return {"type": event_type, "event_id": new_id("event"), **fields}

    @staticmethod
    def user_item(item_id: str, transcript: str | None = None) -> dict[str, Any]:
        """Return a user audio message item (transcript null until transcription is done)."""
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": transcript}],
        }

    @staticmethod
    def assistant_item(
        item_id: str, transcript: str | None = None, content_type: str = "output_audio"
    ) -> dict[str, Any]:
        """Return an assistant audio message, in progress until its transcript is known."""
        return {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress" if transcript is None else "completed",
            "content": []
            if transcript is None
            else [{"type": content_type, "transcript": transcript}],
        }

    def session_created(self, session: dict[str, Any]) -> dict[str, Any]:
        """Return ``session.created`` (never passes the WebRTC filter)."""
        return self._event("session.created", session=session)

    def session_updated(self, session: dict[str, Any]) -> dict[str, Any]:
        """Return ``session.updated`` (never passes the WebRTC filter)."""
        return self._event("session.updated", session=session)

    def error(
        self,
        message: str,
        code: str,
        client_event_id: str | None,
        *,
        error_type: str = "invalid_request_error",
        param: str | None = None,
    ) -> dict[str, Any]:
        """Return an ``error`` event (by default about a client event the emulator refused)."""
        return self._event(
            "error",
            error={
                "type": error_type,
                "code": code,
                "message": message,
                "param": param,
                "event_id": client_event_id,
            },
        )

    def rtc_call_sdp_created(self, rtc_call_id: str, sdp_answer: str) -> dict[str, Any]:
        """Return Voice Live's ``rtc.call.sdp.created`` carrying the SDP answer."""
        return self._event("rtc.call.sdp.created", rtc_call_id=rtc_call_id, sdp_answer=sdp_answer)

    def rtc_call_error(
        self, code: str, message: str, *, error_type: str, rtc_call_id: str | None
    ) -> dict[str, Any]:
        """Return Voice Live's ``rtc.call.error`` about an ``rtc.call.sdp.create``."""
        return self._event(
            "rtc.call.error",
            operation="rtc.call.sdp.create",
            rtc_call_id=rtc_call_id,
            error={"type": error_type, "code": code, "message": message},
        )

    def speech_started(self, item_id: str, audio_start_ms: int) -> dict[str, Any]:
        """Return ``input_audio_buffer.speech_started``."""
        return self._event(
            "input_audio_buffer.speech_started", audio_start_ms=audio_start_ms, item_id=item_id
        )

    def speech_stopped(self, item_id: str, audio_end_ms: int) -> dict[str, Any]:
        """Return ``input_audio_buffer.speech_stopped``."""
        return self._event(
            "input_audio_buffer.speech_stopped", audio_end_ms=audio_end_ms, item_id=item_id
        )

    def committed(self, item_id: str, previous_item_id: str | None) -> dict[str, Any]:
        """Return ``input_audio_buffer.committed``."""
        return self._event(
            "input_audio_buffer.committed", item_id=item_id, previous_item_id=previous_item_id
        )

    def item_added(self, item: dict[str, Any], previous_item_id: str | None) -> dict[str, Any]:
        """Return ``conversation.item.added`` (GA) or ``.created`` (Voice Live), in order."""
        return self._event(self.vocabulary.item_added, item=item, previous_item_id=previous_item_id)

    def item_done(
        self, item: dict[str, Any], previous_item_id: str | None
    ) -> dict[str, Any] | None:
        """Return ``conversation.item.done``, or None where the vocabulary has no such event."""
        if self.vocabulary.item_done is None:
            return None
        return self._event(self.vocabulary.item_done, item=item, previous_item_id=previous_item_id)

    def output_item(self, kind: str, response_id: str, item: dict[str, Any]) -> dict[str, Any]:
        """Return ``response.output_item.added`` or ``.done`` (``kind``) for the answer item."""
        return self._event(
            f"response.output_item.{kind}", response_id=response_id, output_index=0, item=item
        )

    def transcription_completed(self, item_id: str, transcript: str) -> dict[str, Any]:
        """Return the user's transcript for ``item_id`` (it arrives asynchronously)."""
        return self._event(
            "conversation.item.input_audio_transcription.completed",
            item_id=item_id,
            content_index=0,
            transcript=transcript,
            usage=_usage(transcript),
        )

    def output_audio_started(self, response_id: str) -> dict[str, Any]:
        """Return ``output_audio_buffer.started``."""
        return self._event("output_audio_buffer.started", response_id=response_id)

    def output_audio_stopped(self, response_id: str) -> dict[str, Any]:
        """Return ``output_audio_buffer.stopped``."""
        return self._event("output_audio_buffer.stopped", response_id=response_id)

    def transcript_delta(self, response_id: str, item_id: str, delta: str) -> dict[str, Any]:
        """Return one assistant transcript delta (GA or Voice Live name)."""
        return self._event(
            self.vocabulary.transcript_delta,
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            delta=delta,
        )

    def transcript_done(self, response_id: str, item_id: str, transcript: str) -> dict[str, Any]:
        """Return the assistant transcript's done event with the whole turn."""
        return self._event(
            self.vocabulary.transcript_done,
            response_id=response_id,
            item_id=item_id,
            output_index=0,
            content_index=0,
            transcript=transcript,
        )

    def response_created(self, response_id: str, voice: str) -> dict[str, Any]:
        """Return ``response.created`` (never passes the WebRTC filter)."""
        return self._event(
            "response.created",
            response=self._response(response_id, voice, "in_progress", []),
        )

    def response_done(self, response_id: str, voice: str, item: dict[str, Any]) -> dict[str, Any]:
        """Return ``response.done`` (never passes the WebRTC filter), with GA token usage."""
        response = self._response(response_id, voice, "completed", [item])
        if not self.vocabulary.beta_response:
            content = item.get("content") or [{}]
            text = str(content[0].get("transcript") or "")
            response["usage"] = response_usage(text, self.context_tokens)
            self.context_tokens += response["usage"]["output_tokens"] + 100
        return self._event("response.done", response=response)

    def _response(
        self, response_id: str, voice: str, status: str, output: list[dict[str, Any]]
    ) -> dict[str, Any]:
        if self.vocabulary.beta_response:
            return {
                "id": response_id,
                "object": "realtime.response",
                "status": status,
                "status_details": None,
                "output": output,
                "conversation_id": self.conversation_id,
                "modalities": ["text", "audio"],
                "voice": voice,
                "output_audio_format": "pcm16",
                "max_output_tokens": "inf",
                "usage": None,
                "metadata": None,
            }
        return {
            "id": response_id,
            "object": "realtime.response",
            "status": status,
            "status_details": None,
            "output": output,
            "conversation_id": self.conversation_id,
            "output_modalities": ["audio"],
            "max_output_tokens": "inf",
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": voice}},
            "usage": None,
            "metadata": None,
        }
