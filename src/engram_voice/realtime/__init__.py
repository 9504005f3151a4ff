"""Token vending: mint single-use Azure realtime keys with server-controlled sessions."""

from engram_voice.realtime.schemas import CreateSessionRequest, SessionCreated
from engram_voice.realtime.settings import RealtimeSettings

__all__ = ["CreateSessionRequest", "RealtimeSettings", "SessionCreated"]
