"""All settings, grouped by concern and read once from an environment-like mapping.

``Settings.from_env(os.environ)`` in production; tests pass a plain dict. Every problem
is reported at once and start-up stops with that message. Every command reads its groups
through :func:`load_settings` and :class:`ProcessSettings` (bind address and logging), so
each one fails the same way: one message, exit status 2 (habit 14 of STYLE.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import msgspec

from engram_voice.agents.catalog import load_catalog
from engram_voice.auth import AuthSettings
from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.memory import MemorySettings
from engram_voice.memory.recall.settings import RecallSettings
from engram_voice.realtime.settings import RealtimeSettings
from engram_voice.usage.settings import UsageSettings

__all__ = ["ProcessSettings", "ServerSettings", "Settings", "check_agents_file", "load_settings"]

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")


def load_settings(env: Mapping[str, str], read: Callable[[EnvReader], T]) -> T:
    """Read settings with ``read`` from ``env``; raise one ConfigurationError listing them all."""
    reader = EnvReader(env)
    value = read(reader)
    reader.raise_if_invalid()
    return value


def check_agents_file(reader: EnvReader, realtime: RealtimeSettings | str | None) -> None:
    """Load the agent catalog (``AGENTS_FILE``) now, recording why it cannot be used.

    Given the realtime settings, each agent's upstream must be configured and
    CALL_MAX_SECONDS within the caps of the upstreams the agents use; given only a path
    (older callers), the file itself is checked.
    """
    try:
        if isinstance(realtime, RealtimeSettings):
            realtime.load_catalog()
        else:
            load_catalog(realtime)
    except ConfigurationError as exc:
        reader.fail(str(exc))


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


class ProcessSettings(msgspec.Struct, frozen=True):
    """What every command reads alike: environment kind, bind address and logging."""

    environment: str
    host: str
    port: int
    log_level: str
    log_json: bool

    @classmethod
    def from_env(
        cls, reader: EnvReader, *, default_port: int = 8000, local_tool: bool = False
    ) -> ProcessSettings:
        """Read APP_ENV, HOST, PORT, LOG_LEVEL and LOG_FORMAT with the command's defaults.

        ``local_tool`` (the emulator and the Zep stand-in, never deployed) defaults APP_ENV
        to ``local``, hence readable console logs.
        """
        default_environment = "local" if local_tool else "production"
        environment = reader.choice("APP_ENV", default_environment, ("production", "local"))
        log_format = reader.choice(
            "LOG_FORMAT", "json" if environment == "production" else "console", ("json", "console")
        )
        return cls(
            environment=environment,
            host=reader.text("HOST", "127.0.0.1"),
            port=reader.integer("PORT", default_port, minimum=1, maximum=65535),
            log_level=reader.choice("LOG_LEVEL", "info", LOG_LEVELS).upper(),
            log_json=log_format == "json",
        )


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
        """Read the server settings: the process settings plus workers and the web page."""
        process = ProcessSettings.from_env(reader, default_port=8000)
        return cls(
            environment=process.environment,
            host=process.host,
            port=process.port,
            log_level=process.log_level,
            log_json=process.log_json,
            workers=reader.integer("WEB_CONCURRENCY", 1, minimum=1, maximum=64),
            serve_web=reader.flag("SERVE_WEB", default=process.environment == "local"),
        )


class Settings(msgspec.Struct, frozen=True):
    """The whole configuration of one engram-voice process."""

    server: ServerSettings
    realtime: RealtimeSettings
    auth: AuthSettings
    memory: MemorySettings
    token_keys: tuple[tuple[str, Secret], ...]
    usage: UsageSettings = msgspec.field(default_factory=UsageSettings)
    recall: RecallSettings = msgspec.field(default_factory=RecallSettings)

    def signing_keys(self) -> list[bytes]:
        """Return the service's HMAC keys, the active one first."""
        return [secret.reveal().encode() for _, secret in self.token_keys]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Read every group from ``env``; raise ConfigurationError listing all problems."""
        return load_settings(env, cls.read)

    @classmethod
    def read(cls, reader: EnvReader) -> Settings:
        """Read every group from ``reader`` (recording problems on it), the agent catalog too."""
        server = ServerSettings.from_env(reader)
        realtime = RealtimeSettings.from_env(reader)
        check_agents_file(reader, realtime)
        return cls(
            server=server,
            realtime=realtime,
            auth=AuthSettings.from_env(reader, bind_host=server.host),
            memory=MemorySettings.from_env(reader),
            token_keys=_token_keys(reader),
            usage=UsageSettings.from_env(reader),
            recall=RecallSettings.from_env(reader),
        )
