"""Agent catalog: who the caller can talk to, on which upstream, with which voice."""

from engram_voice.agents.catalog import (
    VOICES,
    Agent,
    AgentCatalog,
    AgentVoices,
    Transcription,
    load_catalog,
)
from engram_voice.agents.upstreams import AZURE_OPENAI, UPSTREAMS, VOICE_LIVE
from engram_voice.agents.voicelive import VoiceLiveOptions, VoiceLiveVoice

__all__ = [
    "AZURE_OPENAI",
    "UPSTREAMS",
    "VOICES",
    "VOICE_LIVE",
    "Agent",
    "AgentCatalog",
    "AgentVoices",
    "Transcription",
    "VoiceLiveOptions",
    "VoiceLiveVoice",
    "load_catalog",
]
