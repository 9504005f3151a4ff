"""Build the ``session`` object of Voice Live's ``rtc.call.sdp.create``: what the server controls.

Field names follow ``contracts/voice-live-webrtc.md`` §3 (Voice Live's ``RequestSession``):
``modalities``, ``instructions``, ``voice`` (a voice object), ``turn_detection``,
``input_audio_transcription``, ``input_audio_noise_reduction`` and
``input_audio_echo_cancellation``. Options the agent does not set are left out, so Voice
Live applies its own defaults.
"""

from __future__ import annotations

from typing import Any

from engram_voice.agents import Agent
from engram_voice.errors import ConfigurationError

__all__ = ["MODALITIES", "voicelive_session"]

MODALITIES = ("text", "audio")
"""Voice Live refuses audio alone; text carries the transcripts and events."""


def voicelive_session(agent: Agent, *, instructions: str | None = None) -> dict[str, Any]:
    """Return the ``session`` to send with ``rtc.call.sdp.create`` for ``agent``.

    ``instructions`` replaces the agent's own (e.g. with memory context added); by default
    the catalog's instructions are used.
    """
    voice = agent.voices.voice_live
    if voice is None:  # the catalog refuses this for every Voice Live agent
        raise ConfigurationError(f"agent {agent.id!r} has no Voice Live voice")
    session: dict[str, Any] = {
        "modalities": list(MODALITIES),
        "instructions": agent.instructions if instructions is None else instructions,
        "voice": voice.as_session(),
    }
    session.update(agent.voicelive.as_session())
    return session
