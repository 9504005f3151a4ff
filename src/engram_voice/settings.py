"""All settings, grouped by concern and read once from an environment-like mapping.

``Settings.from_env(os.environ)`` in production; tests pass a plain dict. Every problem
is reported at once and start-up stops with that message.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from engram_voice.auth import AuthSettings
from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.memory import MemorySettings
from engram_voice.realtime.settings import RealtimeSettings

__all__ = ["ServerSettings", "Settings"]


def _token_keys(reader: EnvReader) -> tuple[tuple[str, Secret], ...]:
    keys: list[tuple[str, Secret]] = []
    for item in reader.items("MEMORY_TOKEN_KEYS"):
        kid, sep, secret = item.partition(":")
        if not sep or not kid or len(secret) < 32:  # noqa: PLR2004 - 32 chars = 256 bits of hex
            reader.fail("MEMORY_TOKEN_KEYS entries must be <key id>:<secret of >= 32 characters>")
            continue
        keys.append((kid, Secret(secret)))
    if not keys:
        reader.fail(
            "MEMORY_TOKEN_KEYS is required: <key id>:<secret>[,<old id>:<old secret>], "
            "e.g. k1:$(openssl rand -hex 32)"
        )
    return tuple(keys)


class ServerSettings(msgspec.Struct, frozen=True):
    """How the HTTP service binds and logs."""

    environment: str
    host: str
    port: int
    log_level: str
    log_json: bool
    workers: int
    serve_web: bool

    @classmethod
    def from_env(cls, reader: EnvReader) -> ServerSettings:
        """Read the server settings."""
        environment = reader.choice("APP_ENV", "production", ("production", "local"))
        log_format = reader.choice(
            "LOG_FORMAT", "json" if environment == "production" else "console", ("json", "console")
        )
        return cls(
            environment=environment,
            host=reader.text("HOST", "127.0.0.1"),
            port=reader.integer("PORT", 8000, minimum=1, maximum=65535),
            log_level=reader.choice(
                "LOG_LEVEL", "info", ("debug", "info", "warning", "error")
            ).upper(),
            log_json=log_format == "json",
            workers=reader.integer("WEB_CONCURRENCY", 1, minimum=1, maximum=64),
            serve_web=reader.flag("SERVE_WEB", default=environment == "local"),
        )


class Settings(msgspec.Struct, frozen=True):
    """The whole configuration of one engram-voice process."""

    server: ServerSettings
    realtime: RealtimeSettings
    auth: AuthSettings
    memory: MemorySettings
    token_keys: tuple[tuple[str, Secret], ...]

    def signing_keys(self) -> list[bytes]:
        """Return the service's HMAC keys, the active one first."""
        return [secret.reveal().encode() for _, secret in self.token_keys]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every group from ``env``; raise ConfigurationError listing all problems."""
        reader = EnvReader(env)
        server = ServerSettings.from_env(reader)
        settings = cls(
            server=server,
            realtime=RealtimeSettings.from_env(reader),
            auth=AuthSettings.from_env(reader, bind_host=server.host),
            memory=MemorySettings.from_env(reader),
            token_keys=_token_keys(reader),
        )
        reader.raise_if_invalid()
        return settings
