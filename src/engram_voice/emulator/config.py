"""Settings of the local Azure OpenAI realtime emulator, read from ``EMULATOR_*`` variables."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader

__all__ = ["EmulatorConfig"]

_KEY_SLOTS = 2
_MIN_KEY_LENGTH = 16


class EmulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    """How the emulator authenticates callers and paces the conversation it plays."""

    api_keys: tuple[Secret, Secret]
    bearer_tokens: tuple[Secret, ...] = ()
    deployments: tuple[str, ...] = ("gpt-realtime",)
    latency_ms: int = 0
    turn_interval_seconds: float = 3.0
    max_turns: int = 20
    public_url: str | None = None
    max_active_calls: int = 64
    voicelive_max_seconds: float = 3600.0
    voicelive_connections_per_minute: int = 0
    """New Voice Live control connections per minute per credential; 0 = unlimited."""
    voicelive_mirror_events: bool = False
    media: bool = True
    """False (``EMULATOR_MEDIA=off``, load tests): Azure OpenAI calls get no aiortc peer."""

    @classmethod
    def from_env(cls, reader: EnvReader) -> EmulatorConfig:
        """Read the emulator settings, recording every problem on ``reader``."""
        keys = reader.items("EMULATOR_API_KEYS")
        if len(keys) != _KEY_SLOTS:
            reader.fail(
                "EMULATOR_API_KEYS is required: exactly two keys (Azure's key1,key2), "
                "e.g. $(openssl rand -hex 16),$(openssl rand -hex 16)"
            )
            keys = ("", "")
        elif any(len(key) < _MIN_KEY_LENGTH for key in keys) or keys[0] == keys[1]:
            reader.fail(
                f"EMULATOR_API_KEYS entries must be two different keys of at least "
                f"{_MIN_KEY_LENGTH} characters"
            )
        deployments = reader.items("EMULATOR_DEPLOYMENTS", ("gpt-realtime",))
        public_url = reader.optional("EMULATOR_PUBLIC_URL")
        if public_url is not None:
            parts = urlsplit(public_url)
            if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query:
                reader.fail(f"EMULATOR_PUBLIC_URL={public_url!r} must be an http(s) base URL")
            public_url = public_url.rstrip("/")
        return cls(
            api_keys=(Secret(keys[0]), Secret(keys[1])),
            bearer_tokens=tuple(Secret(t) for t in reader.items("EMULATOR_BEARER_TOKENS")),
            deployments=deployments,
            latency_ms=reader.integer("EMULATOR_LATENCY_MS", 0, minimum=0, maximum=60_000),
            turn_interval_seconds=reader.number(
                "EMULATOR_TURN_INTERVAL_SECONDS", 3.0, minimum=0.2, maximum=600.0
            ),
            max_turns=reader.integer("EMULATOR_MAX_TURNS", 20, minimum=0, maximum=10_000),
            public_url=public_url,
            max_active_calls=reader.integer("EMULATOR_MAX_CALLS", 64, minimum=1, maximum=10_000),
            voicelive_max_seconds=reader.number(
                "EMULATOR_VOICELIVE_MAX_SECONDS", 3600.0, minimum=0.1, maximum=86_400.0
            ),
            voicelive_connections_per_minute=reader.integer(
                "EMULATOR_VOICELIVE_CONNECTIONS_PER_MINUTE", 30, minimum=0, maximum=100_000
            ),
            voicelive_mirror_events=reader.flag("EMULATOR_VOICELIVE_MIRROR_EVENTS", default=False),
            media=reader.flag("EMULATOR_MEDIA", default=True),
        )
