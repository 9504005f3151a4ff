"""Settings of memory enrichment: queue, worker, retry policy, Zep sink and memory tokens.

The signing keys themselves (``MEMORY_TOKEN_KEYS``) are read by the top-level settings,
because conversation ids share them; everything else about memory is read here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader

__all__ = ["ZEP_APIS", "MemorySettings", "PostgresSettings", "RetrySettings", "ZepSettings"]

_DAY = 86_400


ZEP_APIS = ("v4", "v2")
"""``v4``: Zep Cloud through zep-cloud 4.x (threads); ``v2``: self-hosted servers (zep-python)."""
_DEFAULT_MAX_CHARS = {"v4": 4096, "v2": 2500}
"""Zep's content limit per message: 4,096 on Zep Cloud v4, 2,500 on small v2 plans."""


class ZepSettings(msgspec.Struct, frozen=True):
    """Where and how the worker talks to Zep; ``api_url`` None means no sink is configured."""

    api_url: str | None
    api_key: Secret | None
    timeout_seconds: float
    connect_timeout_seconds: float
    max_message_chars: int
    api: str = "v4"
    """``ZEP_API``: ``v4`` (Zep Cloud, zep-cloud 4.x) or ``v2`` (self-hosted, zep-python)."""

    @classmethod
    def from_env(cls, reader: EnvReader) -> ZepSettings:
        """Read the Zep sink settings (``ZEP_*``)."""
        url = reader.optional("ZEP_API_URL")
        key = reader.optional("ZEP_API_KEY")
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                reader.fail(f"ZEP_API_URL={url!r} must be an http(s) URL, e.g. https://zep.example")
            if key is None:
                reader.fail("ZEP_API_KEY is required when ZEP_API_URL is set")
        api = reader.choice("ZEP_API", "v4", ZEP_APIS)
        return cls(
            api=api,
            api_url=url.rstrip("/") if url else None,
            api_key=Secret(key) if key else None,
            timeout_seconds=reader.number("ZEP_TIMEOUT_SECONDS", 10.0, minimum=0.1, maximum=120),
            connect_timeout_seconds=reader.number(
                "ZEP_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=60
            ),
            max_message_chars=reader.integer(
                "ZEP_MAX_MESSAGE_CHARS",
                _DEFAULT_MAX_CHARS.get(api, 4096),
                minimum=1000,
                maximum=100_000,
            ),
        )


class RetrySettings(msgspec.Struct, frozen=True):
    """How delivery failures are retried, broken off and finally dead-lettered."""

    inline_attempts: int
    inline_timeout_seconds: float
    inline_wait_initial: float
    inline_wait_max: float
    backoff_base_seconds: float
    backoff_max_seconds: float
    max_attempts: int
    max_age_seconds: float
    circuit_failures: int
    circuit_cooldown_seconds: float

    @classmethod
    def from_env(cls, reader: EnvReader) -> RetrySettings:
        """Read the retry, circuit breaker and dead-letter settings."""
        return cls(
            inline_attempts=reader.integer(
                "MEMORY_RETRY_INLINE_ATTEMPTS", 3, minimum=1, maximum=10
            ),
            inline_timeout_seconds=reader.number(
                "MEMORY_RETRY_INLINE_TIMEOUT_SECONDS", 20.0, minimum=0.0, maximum=300
            ),
            inline_wait_initial=reader.number(
                "MEMORY_RETRY_WAIT_INITIAL_SECONDS", 0.5, minimum=0.0, maximum=60
            ),
            inline_wait_max=reader.number(
                "MEMORY_RETRY_WAIT_MAX_SECONDS", 5.0, minimum=0.0, maximum=300
            ),
            backoff_base_seconds=reader.number(
                "MEMORY_BACKOFF_BASE_SECONDS", 2.0, minimum=0.0, maximum=3600
            ),
            backoff_max_seconds=reader.number(
                "MEMORY_BACKOFF_MAX_SECONDS", 300.0, minimum=0.0, maximum=_DAY
            ),
            max_attempts=reader.integer("MEMORY_MAX_ATTEMPTS", 25, minimum=1, maximum=10_000),
            max_age_seconds=reader.number(
                "MEMORY_MAX_AGE_SECONDS", 3.0 * _DAY, minimum=1, maximum=365.0 * _DAY
            ),
            circuit_failures=reader.integer("MEMORY_CIRCUIT_FAILURES", 5, minimum=1, maximum=1000),
            circuit_cooldown_seconds=reader.number(
                "MEMORY_CIRCUIT_COOLDOWN_SECONDS", 30.0, minimum=0.0, maximum=3600
            ),
        )


_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
DEFAULT_PASSWORD_SECRET = "postgres-password"  # noqa: S105 - the secret's name, not a value


class PostgresSettings(msgspec.Struct, frozen=True):
    """Where the PostgreSQL queue lives and how the service signs in (password or Entra)."""

    host: str
    port: int
    database: str
    user: str
    password: Secret | None
    sslmode: str
    auth: str
    """``password`` (``MEMORY_POSTGRES_PASSWORD``), ``key-vault`` (the latest version of
    ``MEMORY_POSTGRES_PASSWORD_SECRET`` in ``KEY_VAULT_URL``) or ``entra`` (a token)."""
    client_id: str | None
    pool_size: int
    connect_timeout_seconds: float
    key_vault_url: str | None = None
    password_secret: str = DEFAULT_PASSWORD_SECRET
    key_vault_refresh_seconds: float = 300.0

    @classmethod
    def from_env(cls, reader: EnvReader, *, required: bool) -> PostgresSettings | None:
        """Read ``MEMORY_POSTGRES_*``; None unless ``required`` (``MEMORY_QUEUE=postgres``)."""
        if not required:
            return None
        auth = reader.choice("MEMORY_POSTGRES_AUTH", "password", ("password", "key-vault", "entra"))
        password = reader.optional("MEMORY_POSTGRES_PASSWORD")
        if auth == "password" and password is None:
            reader.fail("MEMORY_POSTGRES_PASSWORD is required when MEMORY_POSTGRES_AUTH=password")
        vault = reader.optional("KEY_VAULT_URL")
        if auth == "key-vault":
            parts = urlsplit(vault or "")
            if parts.scheme != "https" or not parts.hostname or parts.path.strip("/"):
                reader.fail(
                    "MEMORY_POSTGRES_AUTH=key-vault needs KEY_VAULT_URL, the vault's https URL "
                    "without a path, e.g. https://my-vault.vault.azure.net"
                )
        return cls(
            host=reader.require("MEMORY_POSTGRES_HOST", "when MEMORY_QUEUE=postgres"),
            port=reader.integer("MEMORY_POSTGRES_PORT", 5432, minimum=1, maximum=65535),
            database=reader.text("MEMORY_POSTGRES_DB", "engram_voice"),
            user=reader.require("MEMORY_POSTGRES_USER", "when MEMORY_QUEUE=postgres"),
            password=Secret(password) if password and auth == "password" else None,
            sslmode=reader.choice("MEMORY_POSTGRES_SSLMODE", "require", _SSLMODES),
            auth=auth,
            client_id=reader.optional("AZURE_CLIENT_ID"),
            pool_size=reader.integer("MEMORY_POSTGRES_POOL_SIZE", 10, minimum=2, maximum=200),
            connect_timeout_seconds=reader.number(
                "MEMORY_POSTGRES_CONNECT_TIMEOUT_SECONDS", 5.0, minimum=1, maximum=60
            ),
            key_vault_url=vault.rstrip("/") if vault and auth == "key-vault" else None,
            password_secret=reader.text("MEMORY_POSTGRES_PASSWORD_SECRET", DEFAULT_PASSWORD_SECRET),
            key_vault_refresh_seconds=reader.number(
                "KEY_VAULT_REFRESH_SECONDS", 300.0, minimum=5.0, maximum=86400.0
            ),
        )


class MemorySettings(msgspec.Struct, frozen=True):
    """Everything about memory enrichment except the shared signing keys."""

    enabled: bool
    queue: str
    sqlite_path: str
    sqlite_synchronous: str
    store_timeout_seconds: float
    worker: str
    worker_concurrency: int
    poll_seconds: float
    lease_seconds: float
    batch_turns: int
    token_ttl_seconds: int
    rate_per_minute: int
    retain_delivered_seconds: float
    retry: RetrySettings
    zep: ZepSettings
    postgres: PostgresSettings | None = None
    """Set when ``queue`` is ``postgres``."""
    connect_retry_max_seconds: float = 30.0
    """Longest wait between attempts to reach a shared queue that is not answering."""

    @classmethod
    def from_env(cls, reader: EnvReader) -> MemorySettings:
        """Read the memory settings (``MEMORY_*`` and ``ZEP_*``)."""
        queue = reader.choice("MEMORY_QUEUE", "sqlite", ("sqlite", "postgres"))
        token_ttl_seconds = reader.integer(
            "MEMORY_TOKEN_TTL_SECONDS", 2700, minimum=60, maximum=7 * _DAY
        )
        retain_delivered_seconds = reader.number(
            "MEMORY_RETAIN_DELIVERED_SECONDS", 3.0 * _DAY, minimum=60, maximum=365.0 * _DAY
        )
        if retain_delivered_seconds < token_ttl_seconds:
            # A browser may post a turn again as long as its token is valid: the queue must
            # still know the turn then, or the retry is stored and delivered a second time.
            reader.fail(
                f"MEMORY_RETAIN_DELIVERED_SECONDS={retain_delivered_seconds:g} must be at least "
                f"MEMORY_TOKEN_TTL_SECONDS={token_ttl_seconds} (the dedup window must cover "
                "a memory token's lifetime)"
            )
        return cls(
            enabled=reader.flag("MEMORY_ENABLED", default=True),
            queue=queue,
            sqlite_path=reader.text("MEMORY_SQLITE_PATH", "var/memory-queue.sqlite3"),
            sqlite_synchronous=reader.choice(
                "MEMORY_SQLITE_SYNCHRONOUS", "full", ("full", "normal")
            ),
            store_timeout_seconds=reader.number(
                "MEMORY_STORE_TIMEOUT_SECONDS", 3.0, minimum=0.1, maximum=60
            ),
            worker=reader.choice("MEMORY_WORKER", "inprocess", ("inprocess", "off")),
            worker_concurrency=reader.integer(
                "MEMORY_WORKER_CONCURRENCY", 32, minimum=1, maximum=64
            ),
            poll_seconds=reader.number("MEMORY_POLL_SECONDS", 1.0, minimum=0.05, maximum=60),
            lease_seconds=reader.number("MEMORY_LEASE_SECONDS", 15.0, minimum=1, maximum=3600),
            batch_turns=reader.integer("MEMORY_CLAIM_TURNS", 300, minimum=1, maximum=10_000),
            token_ttl_seconds=token_ttl_seconds,
            rate_per_minute=reader.integer(
                "MEMORY_RATE_PER_MINUTE", 240, minimum=1, maximum=1_000_000
            ),
            retain_delivered_seconds=retain_delivered_seconds,
            retry=RetrySettings.from_env(reader),
            zep=ZepSettings.from_env(reader),
            postgres=PostgresSettings.from_env(reader, required=queue == "postgres"),
            connect_retry_max_seconds=reader.number(
                "MEMORY_CONNECT_RETRY_MAX_SECONDS", 30.0, minimum=0.1, maximum=600
            ),
        )
