"""Azure's semantic rules for ``client_secrets`` and the session object it answers with."""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET

from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.schemas import VOICES, AudioFormat, ClientSecretRequest, SessionRequest

__all__ = ["DEFAULT_INSTRUCTIONS", "checked_session", "session_object"]

DEFAULT_INSTRUCTIONS = (
    "You are a helpful, witty, and friendly AI. Your voice and personality should be warm "
    "and engaging."
)
_DEPLOYMENT_NOT_FOUND = (
    "The API deployment for this resource does not exist. If you created the deployment "
    "within the last 5 minutes, please wait a moment and try again."
)
_TURN_DETECTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "server_vad": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 200,
        "idle_timeout_ms": None,
        "create_response": True,
        "interrupt_response": True,
    },
    "semantic_vad": {
        "type": "semantic_vad",
        "eagerness": "auto",
        "create_response": True,
        "interrupt_response": True,
    },
}


def _missing(param: str) -> AzureApiError:
    return AzureApiError.bad_param(
        param, f"Missing required parameter: '{param}'.", "missing_required_parameter"
    )


def checked_session(request: ClientSecretRequest, deployments: tuple[str, ...]) -> SessionRequest:
    """Return the request's session after Azure's checks on type, deployment and voice."""
    session = request.session
    if session is UNSET:
        raise _missing("session")
    if session.type is UNSET:
        raise _missing("session.type")
    if session.type != "realtime":
        raise AzureApiError.bad_param(
            "session.type",
            f"Invalid value for 'session.type': '{session.type}'. "
            "Supported values are: 'realtime'.",
        )
    if session.model is UNSET:
        raise _missing("session.model")
    if session.model not in deployments:
        raise AzureApiError(404, "DeploymentNotFound", _DEPLOYMENT_NOT_FOUND)
    audio = session.audio
    output = audio.output if audio is not UNSET else UNSET
    voice = output.voice if output is not UNSET else UNSET
    if voice is not UNSET and voice not in VOICES:
        supported = ", ".join(f"'{v}'" for v in sorted(VOICES))
        raise AzureApiError.bad_param(
            "session.audio.output.voice",
            f"Invalid value for 'session.audio.output.voice': '{voice}'. "
            f"Supported values are: {supported}.",
        )
    return session


def _format(value: AudioFormat | Any) -> dict[str, Any]:
    if not isinstance(value, AudioFormat) or value.type == "audio/pcm":
        return {"type": "audio/pcm", "rate": 24000}
    return {"type": value.type}


def session_object(session: SessionRequest, session_id: str) -> dict[str, Any]:
    """Return the ``realtime.session`` Azure answers: the request with defaults filled in."""
    given: dict[str, Any] = msgspec.to_builtins(session)
    audio_in = (given.get("audio") or {}).get("input") or {}
    audio_out = (given.get("audio") or {}).get("output") or {}
    inputs = session.audio.input if session.audio is not UNSET else UNSET
    outputs = session.audio.output if session.audio is not UNSET else UNSET
    turn_detection: dict[str, Any] | None = _TURN_DETECTION_DEFAULTS["server_vad"]
    if "turn_detection" in audio_in:
        given_td = audio_in["turn_detection"]
        turn_detection = (
            None if given_td is None else {**_TURN_DETECTION_DEFAULTS[given_td["type"]], **given_td}
        )
    return {
        "type": "realtime",
        "object": "realtime.session",
        "id": session_id,
        "model": given["model"],
        "output_modalities": given.get("output_modalities", ["audio"]),
        "instructions": given.get("instructions", DEFAULT_INSTRUCTIONS),
        "tools": given.get("tools", []),
        "tool_choice": given.get("tool_choice", "auto"),
        "max_output_tokens": given.get("max_output_tokens", "inf"),
        "tracing": given.get("tracing"),
        "truncation": given.get("truncation", "auto"),
        "prompt": given.get("prompt"),
        "include": given.get("include"),
        "expires_at": 0,
        **({"reasoning": given["reasoning"]} if "reasoning" in given else {}),
        "audio": {
            "input": {
                "format": _format(inputs.format if inputs is not UNSET else None),
                "transcription": audio_in.get("transcription"),
                "noise_reduction": audio_in.get("noise_reduction"),
                "turn_detection": turn_detection,
            },
            "output": {
                "format": _format(outputs.format if outputs is not UNSET else None),
                "voice": audio_out.get("voice", "alloy"),
                "speed": audio_out.get("speed", 1.0),
            },
        },
    }
