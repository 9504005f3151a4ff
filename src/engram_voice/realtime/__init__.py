"""Token vending: mint single-use Azure realtime keys with server-controlled sessions."""

from typing import TYPE_CHECKING

from engram_voice.lazy import lazy_exports

__all__ = ["CreateSessionRequest", "RealtimeSettings", "SessionCreated"]

if TYPE_CHECKING:
    from engram_voice.realtime.schemas import CreateSessionRequest, SessionCreated
    from engram_voice.realtime.settings import RealtimeSettings
else:  # loaded on first use: the capture process imports submodules only (see lazy.py)
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "CreateSessionRequest": "engram_voice.realtime.schemas",
            "RealtimeSettings": "engram_voice.realtime.settings",
            "SessionCreated": "engram_voice.realtime.schemas",
        },
    )
