"""Build the GA ``client_secrets`` request body: the session the server controls."""

from __future__ import annotations

from typing import Any

from engram_voice.agents import Agent

__all__ = ["client_secret_request"]


def client_secret_request(agent: Agent, *, deployment: str, ttl_seconds: int) -> dict[str, Any]:
    """Return the body that mints a key bound to ``agent``'s session configuration."""
    transcription: dict[str, Any] = {"model": agent.transcription.model}
    if agent.transcription.language:
        transcription["language"] = agent.transcription.language
    if agent.transcription.prompt:
        transcription["prompt"] = agent.transcription.prompt
    return {
        "expires_after": {"anchor": "created_at", "seconds": ttl_seconds},
        "session": {
            "type": "realtime",
            "model": deployment,
            "instructions": agent.instructions,
            "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "transcription": transcription,
                    "turn_detection": dict(agent.turn_detection),
                },
                "output": {"voice": agent.voice},
            },
        },
    }
