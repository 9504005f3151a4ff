"""Build the GA ``client_secrets`` request body: the session the server controls."""

from __future__ import annotations

from typing import Any

from engram_voice.agents import Agent
from engram_voice.errors import UpstreamUnavailableError

__all__ = ["client_secret_request"]


def client_secret_request(agent: Agent, *, deployment: str, ttl_seconds: int) -> dict[str, Any]:
    """Return the body that mints a key bound to ``agent``'s session configuration.

    The voice is the agent's Azure OpenAI voice, whichever upstream serves its calls.
    """
    voice = agent.voices.azure_openai
    if voice is None:  # only when Azure OpenAI is not configured (the catalog checks)
        raise UpstreamUnavailableError(
            f"Agent {agent.id!r} is not served by Azure OpenAI on this service; "
            "connect through POST /realtime/calls."
        )
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
                "output": {"voice": voice},
            },
        },
    }
