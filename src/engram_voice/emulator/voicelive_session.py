"""Voice Live session objects: the defaults, what an inline or updated session may change.

The emulator keeps Voice Live's session as plain data (its fields are many and evolve with
preview api-versions); it checks what a client most often gets wrong: the voice object
(``azure-standard`` needs a ``name``; ``openai`` names come from the one voice list in
:mod:`engram_voice.agents.catalog`), the turn detection type, and switching the voice
provider after the call started ("Cannot update voice from OpenAIVoice to AzureVoice").
"""

from __future__ import annotations

from typing import Any

from engram_voice.emulator.callmode import VOICE_LIVE_DEFAULT_VOICE
from engram_voice.emulator.events import new_id
from engram_voice.emulator.schemas import VOICES

__all__ = ["SessionRejectedError", "default_session", "merged_session", "voice_provider"]

_MAX_NAME = 256
_AZURE_VOICE_TYPES = frozenset({"azure-standard", "azure-custom", "azure-personal"})
_OTHER_VOICE_TYPES = frozenset({"openai", "azure-realtime-native", "avatar-voice-sync"})
_TURN_DETECTION = frozenset(
    {
        "server_vad",
        "semantic_vad",
        "azure_semantic_vad",
        "azure_semantic_vad_en",
        "azure_semantic_vad_multilingual",
    }
)


class SessionRejectedError(ValueError):
    """A session Voice Live would refuse; ``param`` names the offending field."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


def default_session(model: str | None, agent: str | None) -> dict[str, Any]:
    """Return the session object Voice Live starts a call with, before any update."""
    return {
        "id": new_id("sess"),
        "object": "realtime.session",
        "model": model,
        "agent": agent,
        "modalities": ["text", "audio"],
        "instructions": "",
        "voice": {"type": "azure-standard", "name": VOICE_LIVE_DEFAULT_VOICE},
        "input_audio_format": "pcm16",
        "output_audio_format": "pcm16",
        "input_audio_sampling_rate": 24000,
        "turn_detection": {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": 300,
            "silence_duration_ms": 500,
        },
        "input_audio_transcription": None,
        "input_audio_noise_reduction": None,
        "input_audio_echo_cancellation": None,
        "temperature": 0.8,
        "max_response_output_tokens": "inf",
        "tools": [],
        "tool_choice": "auto",
    }


def voice_provider(voice: Any) -> str:
    """Return ``"azure"`` or ``"openai"`` (what a later update may not switch between)."""
    if isinstance(voice, dict) and voice.get("type") in _AZURE_VOICE_TYPES:
        return "azure"
    return "openai"


def merged_session(current: dict[str, Any], update: Any, *, started: bool) -> dict[str, Any]:
    """Return ``current`` with the top-level fields of ``update`` applied, or raise.

    ``started`` is True for a ``session.update`` on a running call, where the voice
    provider may no longer change.
    """
    if not isinstance(update, dict):
        raise SessionRejectedError("The 'session' must be an object.", "session")
    if "voice" in update:
        _check_voice(update["voice"])
        if started and voice_provider(update["voice"]) != voice_provider(current.get("voice")):
            names = {"azure": "AzureVoice", "openai": "OpenAIVoice"}
            raise SessionRejectedError(
                f"Cannot update voice from {names[voice_provider(current.get('voice'))]} "
                f"to {names[voice_provider(update['voice'])]}.",
                "session.voice",
            )
    if "turn_detection" in update:
        _check_turn_detection(update["turn_detection"])
    fixed = {"id": current["id"], "object": current["object"]}
    return {**current, **update, **fixed}


def _check_voice(voice: Any) -> None:
    if isinstance(voice, str):  # a plain string names an OpenAI voice
        voice = {"type": "openai", "name": voice}
    if not isinstance(voice, dict):
        raise SessionRejectedError("The voice must be an object or a name.", "session.voice")
    kind, name = voice.get("type"), voice.get("name")
    if kind not in _AZURE_VOICE_TYPES and kind not in _OTHER_VOICE_TYPES:
        raise SessionRejectedError(f"Unsupported voice type {kind!r}.", "session.voice.type")
    named = kind in _AZURE_VOICE_TYPES or kind == "openai"
    if named and (not isinstance(name, str) or not name.strip() or len(name) > _MAX_NAME):
        raise SessionRejectedError(
            f"A voice of type '{kind}' needs a 'name'.", "session.voice.name"
        )
    if kind == "openai" and name not in VOICES:
        raise SessionRejectedError(
            f"Unsupported OpenAI voice '{name}'; supported: {', '.join(sorted(VOICES))}.",
            "session.voice.name",
        )
    if kind == "azure-custom" and not isinstance(voice.get("endpoint_id"), str):
        raise SessionRejectedError(
            "A custom voice needs an 'endpoint_id'.", "session.voice.endpoint_id"
        )
    temperature = voice.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not 0.0 <= temperature <= 1.0
    ):
        raise SessionRejectedError(
            "The voice temperature must be between 0.0 and 1.0.", "session.voice.temperature"
        )


def _check_turn_detection(turn_detection: Any) -> None:
    if turn_detection is None:
        return
    kind = turn_detection.get("type") if isinstance(turn_detection, dict) else None
    if kind not in _TURN_DETECTION:
        raise SessionRejectedError(
            f"Unsupported turn detection type {kind!r}.", "session.turn_detection.type"
        )
