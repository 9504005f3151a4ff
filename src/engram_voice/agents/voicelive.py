"""Voice Live's per-agent vocabulary: voice objects and session options, validated up front.

The field names are Voice Live's own (``session`` of ``rtc.call.sdp.create``, see
``contracts/voice-live-webrtc.md`` §3), so :meth:`as_session` renders them unchanged. Every
check raises :class:`~engram_voice.errors.ConfigurationError` with a message the catalog
prefixes with the file and the agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, cast

import msgspec

from engram_voice.errors import ConfigurationError

__all__ = [
    "OPENAI_VOICES",
    "TURN_DETECTION_FIELDS",
    "VoiceLiveOptions",
    "VoiceLiveVoice",
    "parse_options",
    "parse_voice",
]

OPENAI_VOICES = frozenset(
    {"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"}
)
"""OpenAI voice names (Azure OpenAI realtime GA, and Voice Live's ``openai`` voice type)."""

VOICE_TYPES = ("azure-standard", "openai")

_COMMON_VAD = frozenset(
    {
        "threshold",
        "prefix_padding_ms",
        "silence_duration_ms",
        "end_of_utterance_detection",
        "auto_truncate",
        "create_response",
        "interrupt_response",
    }
)
_AZURE_SEMANTIC = _COMMON_VAD | {"speech_duration_ms", "remove_filler_words", "languages"}
TURN_DETECTION_FIELDS: Mapping[str, frozenset[str]] = {
    "server_vad": _COMMON_VAD,
    "semantic_vad": frozenset({"eagerness", "create_response", "interrupt_response"}),
    "azure_semantic_vad": _AZURE_SEMANTIC,
    "azure_semantic_vad_multilingual": _AZURE_SEMANTIC,
}
"""The fields each Voice Live turn detection type takes (besides ``type``)."""


class VoiceLiveVoice(msgspec.Struct, frozen=True):
    """A Voice Live voice object: ``azure-standard`` (neural/HD voices) or ``openai``."""

    type: str
    name: str
    temperature: float | None = None

    def as_session(self) -> dict[str, Any]:
        """Return the ``session.voice`` object exactly as Voice Live takes it."""
        voice: dict[str, Any] = {"type": self.type, "name": self.name}
        if self.temperature is not None:
            voice["temperature"] = self.temperature
        return voice


def parse_voice(raw: object, where: str) -> VoiceLiveVoice:
    """Validate a TOML voice (a string = an OpenAI name, or a table) into a voice object."""
    if isinstance(raw, str):
        raw = {"type": "openai", "name": raw}
    if not isinstance(raw, Mapping):
        raise ConfigurationError(f"{where} must be a voice name or a table with type and name")
    kind = raw.get("type")
    if kind not in VOICE_TYPES:
        raise ConfigurationError(
            f"{where} has type {kind!r}; Voice Live voice types here: " + ", ".join(VOICE_TYPES)
        )
    allowed = {"type", "name", "temperature"} if kind == "azure-standard" else {"type", "name"}
    if unknown := sorted(set(raw) - allowed):
        raise ConfigurationError(f"{where} ({kind}) does not take {', '.join(unknown)}")
    name = raw.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"{where} ({kind}) needs a name, e.g. en-US-AvaNeural")
    if kind == "openai" and name not in OPENAI_VOICES:
        raise ConfigurationError(
            f"{where} uses unknown voice {name!r}; choose one of "
            + ", ".join(sorted(OPENAI_VOICES))
        )
    temperature = raw.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, int | float):
            raise ConfigurationError(f"{where} temperature must be a number from 0 to 1")
        if not 0.0 <= float(temperature) <= 1.0:
            raise ConfigurationError(
                f"{where} temperature {temperature} is outside 0..1 (Voice Live's HD voice range)"
            )
        temperature = float(temperature)
    return VoiceLiveVoice(type=kind, name=name.strip(), temperature=temperature)


class EndOfUtterance(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Voice Live's semantic end-of-utterance detection inside ``turn_detection``."""

    model: Literal["semantic_detection_v1", "semantic_detection_v1_multilingual"]
    threshold_level: Literal["low", "medium", "high", "default"] | None = None
    timeout_ms: int | None = None


class TurnDetection(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """Voice Live ``turn_detection``; which fields a type takes is checked separately."""

    type: Literal[
        "server_vad", "semantic_vad", "azure_semantic_vad", "azure_semantic_vad_multilingual"
    ]
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    speech_duration_ms: int | None = None
    remove_filler_words: bool | None = None
    languages: list[str] | None = None
    eagerness: Literal["low", "medium", "high", "auto"] | None = None
    end_of_utterance_detection: EndOfUtterance | None = None
    auto_truncate: bool | None = None
    create_response: bool | None = None
    interrupt_response: bool | None = None


class InputTranscription(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True
):
    """Voice Live ``input_audio_transcription``: the model and optional language hints."""

    model: Literal[
        "azure-speech",
        "mai-transcribe",
        "mai-transcribe-1",
        "whisper-1",
        "gpt-4o-transcribe",
        "gpt-4o-mini-transcribe",
        "gpt-4o-transcribe-diarize",
    ]
    language: str | None = None
    prompt: str | None = None
    phrase_list: list[str] | None = None


class NoiseReduction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Voice Live ``input_audio_noise_reduction``."""

    type: Literal["azure_deep_noise_suppression", "near_field", "far_field"]


class EchoCancellation(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Voice Live ``input_audio_echo_cancellation``."""

    type: Literal["server_echo_cancellation"]


class VoiceLiveOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The Voice Live session options of ``[defaults.voice_live]`` or one agent's table."""

    turn_detection: TurnDetection | None = None
    input_audio_transcription: InputTranscription | None = None
    input_audio_noise_reduction: NoiseReduction | None = None
    input_audio_echo_cancellation: EchoCancellation | None = None

    def merged_over(self, defaults: VoiceLiveOptions) -> VoiceLiveOptions:
        """Return these options with each option not given here taken from ``defaults``."""
        return VoiceLiveOptions(
            turn_detection=self.turn_detection or defaults.turn_detection,
            input_audio_transcription=(
                self.input_audio_transcription or defaults.input_audio_transcription
            ),
            input_audio_noise_reduction=(
                self.input_audio_noise_reduction or defaults.input_audio_noise_reduction
            ),
            input_audio_echo_cancellation=(
                self.input_audio_echo_cancellation or defaults.input_audio_echo_cancellation
            ),
        )

    def as_session(self) -> dict[str, Any]:
        """Return the options as ``session`` fields (only those that are set)."""
        return cast("dict[str, Any]", msgspec.to_builtins(self))


def parse_options(raw: Mapping[str, Any], where: str) -> VoiceLiveOptions:
    """Validate a ``voice_live`` table's session options (the ``voice`` key excluded)."""
    try:
        options = msgspec.convert(dict(raw), VoiceLiveOptions)
    except msgspec.ValidationError as exc:
        raise ConfigurationError(f"{where}: {exc}") from exc
    detection = options.turn_detection
    if detection is not None:
        given = {k for k, v in msgspec.structs.asdict(detection).items() if v is not None}
        allowed = TURN_DETECTION_FIELDS[detection.type]
        if extra := sorted(given - allowed - {"type"}):
            raise ConfigurationError(
                f"{where}: turn_detection type {detection.type} does not take "
                f"{', '.join(extra)} (it takes {', '.join(sorted(allowed))})"
            )
        if detection.threshold is not None and not 0.0 <= detection.threshold <= 1.0:
            raise ConfigurationError(f"{where}: turn_detection threshold must be within 0..1")
    return options
