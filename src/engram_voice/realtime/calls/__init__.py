"""Calls set up through the service: the offer relayed upstream, the live call held here."""

from engram_voice.realtime.calls.registry import CallLimits, CallRegistry, LiveCall
from engram_voice.realtime.calls.schemas import CallCreated, CreateCallRequest
from engram_voice.realtime.calls.service import RealtimeCalls
from engram_voice.realtime.calls.upstream import CallUpstream, OpenedCall

__all__ = [
    "CallCreated",
    "CallLimits",
    "CallRegistry",
    "CallUpstream",
    "CreateCallRequest",
    "LiveCall",
    "OpenedCall",
    "RealtimeCalls",
]
