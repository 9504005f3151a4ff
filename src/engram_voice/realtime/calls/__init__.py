"""Calls set up through the service: the offer relayed upstream, the live call held here."""

from typing import TYPE_CHECKING

from engram_voice.lazy import lazy_exports

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

if TYPE_CHECKING:
    from engram_voice.realtime.calls.registry import CallLimits, CallRegistry, LiveCall
    from engram_voice.realtime.calls.schemas import CallCreated, CreateCallRequest
    from engram_voice.realtime.calls.service import RealtimeCalls
    from engram_voice.realtime.calls.upstream import CallUpstream, OpenedCall
else:  # loaded on first use: the capture process imports submodules only (see lazy.py)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "CallCreated": "engram_voice.realtime.calls.schemas",
            "CallLimits": "engram_voice.realtime.calls.registry",
            "CallRegistry": "engram_voice.realtime.calls.registry",
            "CallUpstream": "engram_voice.realtime.calls.upstream",
            "CreateCallRequest": "engram_voice.realtime.calls.schemas",
            "LiveCall": "engram_voice.realtime.calls.registry",
            "OpenedCall": "engram_voice.realtime.calls.upstream",
            "RealtimeCalls": "engram_voice.realtime.calls.service",
        },
    )
