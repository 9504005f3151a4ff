"""Wire types the emulator accepts: the GA ``client_secrets`` body and the fault controls.

Structs forbid unknown fields like Azure does (``Unknown parameter``), declare Azure's
limits on the type, and :func:`decode_strict` turns a decoding failure into a 400 that
names the offending parameter with a dotted path such as ``session.audio.output.voice``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, UnsetType

from engram_voice.agents.catalog import VOICES  # Azure's voice list, kept in one place
from engram_voice.emulator.azure_errors import AzureApiError

__all__ = [
    "VOICES",
    "AudioConfig",
    "AudioFormat",
    "AudioInput",
    "AudioOutput",
    "ClientSecretRequest",
    "ExpiresAfter",
    "FaultRequest",
    "NoiseReduction",
    "SemanticVad",
    "ServerVad",
    "SessionRequest",
    "SidebandFaultMode",
    "Transcription",
    "VoiceLiveFaultMode",
    "decode_strict",
]


Name = Annotated[str, Meta(min_length=1, max_length=256)]


class ExpiresAfter(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """When the ephemeral key stops being usable, counted from its creation."""

    anchor: Literal["created_at"] = "created_at"
    seconds: Annotated[int, Meta(ge=10, le=7200)] = 600


class AudioFormat(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """An audio format: 24 kHz PCM, G.711 mu-law or A-law."""

    type: Literal["audio/pcm", "audio/pcmu", "audio/pcma"]
    rate: Literal[24000] | UnsetType = UNSET


class Transcription(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How the user's speech is transcribed (asynchronously, next to the conversation)."""

    model: Name | UnsetType = UNSET
    language: Annotated[str, Meta(max_length=16)] | UnsetType = UNSET
    languages: Annotated[list[Annotated[str, Meta(max_length=16)]], Meta(max_length=16)] | (
        UnsetType
    ) = UNSET
    prompt: Annotated[str, Meta(max_length=8192)] | UnsetType = UNSET
    keywords: Annotated[list[Name], Meta(max_length=256)] | UnsetType = UNSET
    delay: Literal["minimal", "low", "medium", "high", "xhigh"] | UnsetType = UNSET


class ServerVad(
    msgspec.Struct, tag_field="type", tag="server_vad", forbid_unknown_fields=True, kw_only=True
):
    """Volume-based turn detection."""

    threshold: Annotated[float, Meta(ge=0.0, le=1.0)] | UnsetType = UNSET
    prefix_padding_ms: Annotated[int, Meta(ge=0, le=10_000)] | UnsetType = UNSET
    silence_duration_ms: Annotated[int, Meta(ge=0, le=10_000)] | UnsetType = UNSET
    idle_timeout_ms: Annotated[int, Meta(ge=0)] | UnsetType | None = UNSET
    create_response: bool | UnsetType = UNSET
    interrupt_response: bool | UnsetType = UNSET


class SemanticVad(
    msgspec.Struct, tag_field="type", tag="semantic_vad", forbid_unknown_fields=True, kw_only=True
):
    """Model-based turn detection."""

    eagerness: Literal["low", "medium", "high", "auto"] | UnsetType = UNSET
    create_response: bool | UnsetType = UNSET
    interrupt_response: bool | UnsetType = UNSET


class NoiseReduction(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Input noise reduction for near or far microphones."""

    type: Literal["near_field", "far_field"] | UnsetType = UNSET
    strength: float | UnsetType = UNSET


class AudioInput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The user's side of the audio: format, transcription, turn detection."""

    format: AudioFormat | UnsetType = UNSET
    noise_reduction: NoiseReduction | UnsetType | None = UNSET
    transcription: Transcription | UnsetType | None = UNSET
    turn_detection: ServerVad | SemanticVad | UnsetType | None = UNSET


class AudioOutput(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The model's side of the audio: format, voice, speed."""

    format: AudioFormat | UnsetType = UNSET
    voice: Annotated[str, Meta(max_length=64)] | UnsetType = UNSET
    speed: Annotated[float, Meta(ge=0.25, le=1.5)] | UnsetType = UNSET


class AudioConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Input and output audio configuration."""

    input: AudioInput | UnsetType = UNSET
    output: AudioOutput | UnsetType = UNSET


class SessionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The session a minted key is bound to; ``type`` and ``model`` are checked semantically."""

    type: Annotated[str, Meta(max_length=32)] | UnsetType = UNSET
    model: Name | UnsetType = UNSET
    instructions: Annotated[str, Meta(max_length=128_000)] | UnsetType = UNSET
    audio: AudioConfig | UnsetType = UNSET
    output_modalities: Annotated[list[Literal["text", "audio"]], Meta(max_length=1)] | (
        UnsetType
    ) = UNSET
    include: list[Literal["item.input_audio_transcription.logprobs"]] | UnsetType = UNSET
    max_output_tokens: Annotated[int, Meta(ge=1, le=4096)] | Literal["inf"] | UnsetType = UNSET
    parallel_tool_calls: bool | UnsetType = UNSET
    tool_choice: Any = UNSET
    tools: Annotated[list[dict[str, Any]], Meta(max_length=128)] | UnsetType = UNSET
    tracing: Any = UNSET
    truncation: Any = UNSET
    prompt: Any = UNSET
    reasoning: Any = UNSET


class ClientSecretRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of ``POST /openai/v1/realtime/client_secrets``."""

    expires_after: ExpiresAfter = msgspec.field(default_factory=ExpiresAfter)
    session: SessionRequest | UnsetType = UNSET


VoiceLiveFaultMode = Literal[
    "upgrade_401",
    "upgrade_404",
    "rtc_call_error",
    "error_event",
    "drop_mid_call",
    "slow_answer",
    "never_answer",
    "mirror_events",
]
SidebandFaultMode = Literal["refuse", "drop", "late"]
"""The sideband's faults: ``refuse`` the upgrade (401), ``drop`` the socket mid-call,
``late``: hold the upgrade until the call's first item was said (``latency_ms`` at most)."""


class FaultRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A change to the injected faults; fields left out keep their current setting.

    For ``target: "voicelive"`` the fault is a ``mode`` (None removes it) with an optional
    ``code`` (for ``rtc_call_error``/``error_event``), ``latency_ms`` (for ``slow_answer``
    and ``drop_mid_call``) and ``count`` (calls it applies to; unset = until cleared).
    For ``target: "sideband"`` the ``mode`` is ``refuse``, ``drop`` or ``late`` (with
    ``count``; ``late`` holds the upgrade until the call's first item, ``latency_ms`` at most).
    """

    target: Literal["client_secrets", "calls", "voicelive", "sideband"] = "client_secrets"
    mode: VoiceLiveFaultMode | SidebandFaultMode | UnsetType | None = UNSET
    code: Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")] | (
        None
    ) = None
    status: Annotated[int, Meta(ge=400, le=599)] | UnsetType | None = UNSET
    count: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    retry_after: Annotated[int, Meta(ge=0, le=3600)] | None = None
    latency_ms: Annotated[int, Meta(ge=0, le=120_000)] | UnsetType = UNSET
    hang: bool | UnsetType = UNSET
    clear: bool = False


_AT = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_FIELD = re.compile(r"(?P<kind>unknown|missing required) field `(?P<field>[^`]+)`")
T = TypeVar("T")


def _describe(error: msgspec.ValidationError) -> AzureApiError:
    match = _AT.match(str(error))
    what = match.group("what") if match else str(error)
    path = (match.group("path") or "") if match else ""
    param = path.lstrip(".") or None
    if field := _FIELD.search(what):
        param = f"{param}.{field['field']}" if param else field["field"]
        if field["kind"] == "unknown":
            return AzureApiError.bad_param(
                param, f"Unknown parameter: '{param}'.", "unknown_parameter"
            )
        return AzureApiError.bad_param(
            param, f"Missing required parameter: '{param}'.", "missing_required_parameter"
        )
    if param is None:
        return AzureApiError(400, "invalid_type", f"Invalid body: {what}.")
    return AzureApiError.bad_param(param, f"Invalid value for '{param}': {what}.")


def decode_strict(body: bytes, model: type[T]) -> T:
    """Decode a JSON ``body`` into ``model`` or raise a 400 naming the bad parameter."""
    try:
        return msgspec.json.decode(body, type=model)
    except msgspec.ValidationError as exc:
        raise _describe(exc) from exc
    except msgspec.DecodeError as exc:
        raise AzureApiError(
            400,
            "invalid_json",
            "We could not parse the JSON body of your request. The body must be a JSON object.",
        ) from exc
