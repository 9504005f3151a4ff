"""How one call's events travel: which data channel, which names, what reaches the control.

An Azure OpenAI call (:func:`ga_mode`) speaks the GA vocabulary on ``oai-events``, greets
with ``session.created`` there, and with ``webrtcfilter=on`` withholds what the filter
drops. A Voice Live call (:func:`voice_live_mode`) speaks the beta vocabulary on
``voice-live-events``; session, error and tool events go to the control WebSocket
instead, and with ``mirror`` the data channel's events are copied onto the WebSocket too
(the contract's §4.4 is unconfirmed either way).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engram_voice.emulator.events import (
    GA_EVENTS,
    VOICE_LIVE_CHANNEL_EVENTS,
    VOICE_LIVE_EVENTS,
    WEBRTC_FILTERED_EVENTS,
    Vocabulary,
)

__all__ = [
    "GA_CHANNEL",
    "VOICE_LIVE_CHANNEL",
    "VOICE_LIVE_DEFAULT_VOICE",
    "CallMode",
    "ga_mode",
    "ga_voice",
    "voice_live_mode",
    "voice_live_voice",
]

GA_CHANNEL = "oai-events"
VOICE_LIVE_CHANNEL = "voice-live-events"
VOICE_LIVE_DEFAULT_VOICE = "en-US-Ava:DragonHDLatestNeural"
_VOICE_LIVE_CONTROL_EVENTS = frozenset(
    {
        "session.created",
        "session.updated",
        "error",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
    }
)


def ga_voice(session: dict[str, Any]) -> str | None:
    """Return the voice of a GA session (``audio.output.voice``), if set."""
    audio = session.get("audio")
    output = audio.get("output") if isinstance(audio, dict) else None
    voice = output.get("voice") if isinstance(output, dict) else None
    return voice if isinstance(voice, str) else None


def voice_live_voice(session: dict[str, Any]) -> str | None:
    """Return the voice name of a Voice Live session (``voice`` object or openai name)."""
    voice = session.get("voice")
    if isinstance(voice, dict):
        voice = voice.get("name")
    return voice if isinstance(voice, str) else None


@dataclass(frozen=True, kw_only=True)
class CallMode:
    """The protocol a call's peer speaks on its data channel and towards a control channel."""

    label: str
    vocabulary: Vocabulary
    channel_events: frozenset[str] | None
    """Events the data channel carries; None means every event."""
    control_events: frozenset[str] = frozenset()
    greet_on_channel: bool = True
    mirror: bool = False
    default_voice: str = "alloy"
    voice_name: Callable[[dict[str, Any]], str | None] = ga_voice

    def routes(self, event_type: str) -> tuple[bool, bool]:
        """Return whether ``event_type`` goes to the data channel, and to the control."""
        channel = self.channel_events is None or event_type in self.channel_events
        control = event_type in self.control_events or (self.mirror and channel)
        return channel, control


def ga_mode(*, filtered: bool) -> CallMode:
    """Return Azure OpenAI's GA mode (``filtered`` = ``webrtcfilter=on``)."""
    return CallMode(
        label=GA_CHANNEL,
        vocabulary=GA_EVENTS,
        channel_events=WEBRTC_FILTERED_EVENTS if filtered else None,
    )


def voice_live_mode(*, mirror: bool) -> CallMode:
    """Return Voice Live's mode; ``mirror`` copies data-channel events onto the control."""
    return CallMode(
        label=VOICE_LIVE_CHANNEL,
        vocabulary=VOICE_LIVE_EVENTS,
        channel_events=VOICE_LIVE_CHANNEL_EVENTS,
        control_events=_VOICE_LIVE_CONTROL_EVENTS,
        greet_on_channel=False,
        mirror=mirror,
        default_voice=VOICE_LIVE_DEFAULT_VOICE,
        voice_name=voice_live_voice,
    )
