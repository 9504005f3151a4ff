"""Build in-process emulators for tests: fresh keys, a hand-moved clock, fast turns."""

from __future__ import annotations

import secrets
import time

from engram_voice.credentials.secret import Secret
from engram_voice.emulator import EmulatorConfig
from tests.support.clock import FakeClock

__all__ = ["TestKeys", "emulator_config", "wall_clock"]


class TestKeys:
    """Random key1/key2 and an accepted Entra bearer token for one emulator."""

    __test__ = False  # not a test class, despite the name

    def __init__(self) -> None:
        self.key1 = secrets.token_hex(16)
        self.key2 = secrets.token_hex(16)
        self.bearer = f"entra-{secrets.token_hex(16)}"


def wall_clock() -> FakeClock:
    """Return a fake clock starting at the real time (emulator keys then expire plausibly)."""
    return FakeClock(time.time())


def emulator_config(
    keys: TestKeys,
    *,
    turn_interval_seconds: float = 0.5,
    max_turns: int = 3,
    public_url: str | None = None,
    latency_ms: int = 0,
) -> EmulatorConfig:
    """Return an emulator configuration for ``keys`` with a fast conversation."""
    return EmulatorConfig(
        api_keys=(Secret(keys.key1), Secret(keys.key2)),
        bearer_tokens=(Secret(keys.bearer),),
        turn_interval_seconds=turn_interval_seconds,
        max_turns=max_turns,
        public_url=public_url,
        latency_ms=latency_ms,
    )
