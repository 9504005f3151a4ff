"""Local Azure realtime emulator: Azure OpenAI GPT Realtime (GA) and Azure Voice Live WebRTC.

Same paths, auth rules, status codes and single-use ephemeral keys as Azure OpenAI, and
Voice Live's control WebSocket (``/voice-live/realtime/calls``); one aiortc peer answers
SDP offers over loopback, receives audio, plays audio back and sends transcript events on
the ``oai-events`` (GA names) or ``voice-live-events`` (Voice Live names) data channel.
Controls for tests live under ``/_emulator`` (state, faults, key regeneration).
"""

from __future__ import annotations

from engram_voice.emulator.app import create_emulator_app, emulator_state, run_emulator
from engram_voice.emulator.config import EmulatorConfig
from engram_voice.emulator.loopback import loopback_ice
from engram_voice.emulator.state import EmulatorState

__all__ = [
    "EmulatorConfig",
    "EmulatorState",
    "create_emulator_app",
    "emulator_state",
    "loopback_ice",
    "run_emulator",
]
