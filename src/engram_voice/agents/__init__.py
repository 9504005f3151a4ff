"""Agent catalog: who the caller can talk to, with voice and instructions."""

from engram_voice.agents.catalog import VOICES, Agent, AgentCatalog, Transcription, load_catalog

__all__ = ["VOICES", "Agent", "AgentCatalog", "Transcription", "load_catalog"]
