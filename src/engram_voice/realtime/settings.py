"""Settings of the realtime (token vending) path: endpoints, credential, timeouts."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from engram_voice.agents import AgentCatalog, load_catalog
from engram_voice.agents.upstreams import (
    AZURE_OPENAI,
    UPSTREAMS,
    VOICE_LIVE,
    configured_by,
    upstream_label,
)
from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.netutil import is_loopback_host
from engram_voice.realtime.calls.capture_priority import PRIORITIES
from engram_voice.realtime.voicelive_settings import VoiceLiveSettings

__all__ = [
    "AUTH_CHOICES",
    "DEFAULT_KEY_VAULT_SECRET_NAME",
    "UPSTREAM_CALL_CAP_SECONDS",
    "RealtimeSettings",
    "VoiceLiveSettings",
]

AUTH_CHOICES = ("api-key", "entra", "key-vault")
DEFAULT_KEY_VAULT_SECRET_NAME = "voicelive-api-key"  # noqa: S105 - the secret's name, not a value
UPSTREAM_CALL_CAP_SECONDS = {VOICE_LIVE: 3600, AZURE_OPENAI: 1800}
"""Each upstream's own limit on one call (Voice Live: 60 min per connection)."""


def _endpoint_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        return f"AZURE_OPENAI_ENDPOINTS entry {url!r} is not an http(s) URL"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return f"AZURE_OPENAI_ENDPOINTS entry {url!r} must use https (http only for loopback)"
    if parts.query or parts.fragment:
        return f"AZURE_OPENAI_ENDPOINTS entry {url!r} must not carry a query or fragment"
    return None


def _vault_url(reader: EnvReader, users: list[str]) -> str | None:
    """Read KEY_VAULT_URL, checked when ``users`` (the ``X_AUTH=key-vault`` settings) need it."""
    url = reader.optional("KEY_VAULT_URL")
    if not users:
        return url
    if url is None:
        if "AZURE_OPENAI_AUTH" in users:  # Voice Live reports its own missing URL
            reader.fail(
                "KEY_VAULT_URL is required when AZURE_OPENAI_AUTH=key-vault, "
                "e.g. https://my-vault.vault.azure.net"
            )
        return None
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.path.strip("/"):
        reader.fail(
            f"KEY_VAULT_URL={url!r} must be the vault's https URL without a path, "
            "e.g. https://my-vault.vault.azure.net (Key Vault accepts only https)"
        )
        return None
    return url.rstrip("/")


def _azure_openai_wanted(reader: EnvReader) -> bool:
    return bool(
        reader.raw("AZURE_OPENAI_ENDPOINTS")
        or reader.raw("AZURE_OPENAI_AUTH")
        or reader.raw("AZURE_OPENAI_API_KEY")
    )


def _default_upstream(reader: EnvReader, configured: frozenset[str]) -> str:
    """REALTIME_DEFAULT_UPSTREAM, defaulting to the configured upstream (Voice Live if both)."""
    default = AZURE_OPENAI if configured == {AZURE_OPENAI} else VOICE_LIVE
    upstream = reader.choice("REALTIME_DEFAULT_UPSTREAM", default, UPSTREAMS)
    if configured and upstream not in configured:
        reader.fail(
            f"REALTIME_DEFAULT_UPSTREAM={upstream} is not configured: set "
            f"{configured_by(upstream)}, or choose {' or '.join(sorted(configured))}"
        )
    return upstream


def _call_max_seconds(reader: EnvReader) -> float:
    """CALL_MAX_SECONDS, never above the longest upstream cap (the catalog checks the rest)."""
    value = reader.number("CALL_MAX_SECONDS", 1800.0, minimum=0.1, maximum=86400.0)
    cap = UPSTREAM_CALL_CAP_SECONDS[VOICE_LIVE]
    if value > cap:
        reader.fail(
            f"CALL_MAX_SECONDS={value:g} is above every upstream's own call limit (Azure AI "
            f"Voice Live {cap} s, Azure OpenAI {UPSTREAM_CALL_CAP_SECONDS[AZURE_OPENAI]} s); "
            "the service cannot keep a call longer than its upstream does"
        )
        return float(cap)
    return value


class RealtimeSettings(msgspec.Struct, frozen=True):
    """The realtime upstreams, the default upstream and the call limits.

    Azure OpenAI is ``endpoints`` and the fields after it (``endpoints`` is empty when it
    is not configured); Voice Live is ``voicelive`` (None when not configured).
    """

    endpoints: tuple[str, ...]
    deployment: str
    auth: str
    api_key: Secret | None
    client_id: str | None
    key_ttl_seconds: int
    connect_timeout: float
    request_timeout: float
    deadline: float
    credential_timeout: float
    failure_threshold: int
    cooldown_seconds: float
    webrtc_filter: bool
    agents_file: str | None
    key_vault_url: str | None = None
    key_vault_secret_name: str = DEFAULT_KEY_VAULT_SECRET_NAME
    key_vault_refresh_seconds: float = 300.0
    voicelive: VoiceLiveSettings | None = None
    default_upstream: str = AZURE_OPENAI
    call_max_seconds: float = 1800.0
    call_max_concurrent_per_user: int = 2
    capture_process: bool = True
    """Hold Azure OpenAI sidebands in a capture process beside the service (else in-process)."""
    capture_priority: str = "normal"
    """The capture process's CPU priority: ``idle``, ``low`` or ``normal`` (capture_priority)."""

    @property
    def azure_openai_configured(self) -> bool:
        """Return True when Azure OpenAI endpoints are configured."""
        return bool(self.endpoints)

    @property
    def upstreams(self) -> frozenset[str]:
        """Return the upstreams this deployment configures."""
        configured = {AZURE_OPENAI} if self.endpoints else set()
        if self.voicelive is not None:
            configured.add(VOICE_LIVE)
        return frozenset(configured)

    def call_max_seconds_for(self, upstream: str) -> float:
        """Return the longest call on ``upstream``: CALL_MAX_SECONDS within its own cap."""
        return min(self.call_max_seconds, float(UPSTREAM_CALL_CAP_SECONDS[upstream]))

    def load_catalog(self) -> AgentCatalog:
        """Load AGENTS_FILE with this deployment's default and configured upstreams."""
        catalog = load_catalog(
            self.agents_file,
            default_upstream=self.default_upstream,
            configured=self.upstreams or None,  # none configured: reported on its own
        )
        for upstream in sorted(catalog.upstreams()):
            cap = UPSTREAM_CALL_CAP_SECONDS[upstream]
            if self.call_max_seconds > cap:
                users = ", ".join(a.id for a in catalog.all() if a.upstream == upstream)
                label = upstream_label(upstream)
                raise ConfigurationError(
                    f"CALL_MAX_SECONDS={self.call_max_seconds:g} is above {label}'s own {cap} s "
                    f"call limit (agents {users} use {upstream}); set at most {cap}"
                )
        return catalog

    @classmethod
    def from_env(cls, reader: EnvReader) -> RealtimeSettings:
        """Read the realtime settings, recording every problem on ``reader``."""
        wanted = _azure_openai_wanted(reader)
        endpoints = tuple(e.rstrip("/") for e in reader.items("AZURE_OPENAI_ENDPOINTS"))
        if wanted and not endpoints:
            reader.fail(
                "AZURE_OPENAI_ENDPOINTS is required: the Azure OpenAI resource URL(s) in "
                "priority order, e.g. https://my-resource.openai.azure.com"
            )
        for url in endpoints:
            if problem := _endpoint_problem(url):
                reader.fail(problem)
        auth = reader.choice("AZURE_OPENAI_AUTH", "api-key", AUTH_CHOICES)
        key = reader.optional("AZURE_OPENAI_API_KEY")
        if wanted and auth == "api-key" and not key:
            reader.fail(
                "AZURE_OPENAI_API_KEY is required when AZURE_OPENAI_AUTH=api-key "
                "(or set AZURE_OPENAI_AUTH=key-vault or entra to use a managed identity)"
            )
        request_timeout = reader.number(
            "UPSTREAM_TIMEOUT_SECONDS", 10.0, minimum=0.05, maximum=120.0
        )
        client_id = reader.optional("AZURE_CLIENT_ID")
        credential_timeout = reader.number(
            "CREDENTIAL_TIMEOUT_SECONDS", 5.0, minimum=0.05, maximum=120.0
        )
        refresh_seconds = reader.number(
            "KEY_VAULT_REFRESH_SECONDS", 300.0, minimum=5.0, maximum=86400.0
        )
        raw_vault = reader.optional("KEY_VAULT_URL")
        voicelive = VoiceLiveSettings.from_env(
            reader,
            vault_url=raw_vault.rstrip("/") if raw_vault else None,
            client_id=client_id,
            credential_timeout=credential_timeout,
            refresh_seconds=refresh_seconds,
        )
        vault_users = [
            name
            for name, mode in (
                ("AZURE_OPENAI_AUTH", auth if wanted else None),
                ("AZURE_VOICELIVE_AUTH", voicelive.auth if voicelive else None),
            )
            if mode == "key-vault"
        ]
        configured = frozenset(
            [*([AZURE_OPENAI] if endpoints else []), *([VOICE_LIVE] if voicelive else [])]
        )
        if not configured and not wanted:
            reader.fail(
                "no realtime upstream is configured: set AZURE_VOICELIVE_ENDPOINT (Azure AI "
                "Voice Live, e.g. https://my-resource.services.ai.azure.com) and/or "
                "AZURE_OPENAI_ENDPOINTS (Azure OpenAI, e.g. https://my-resource.openai.azure.com)"
            )
        return cls(
            endpoints=endpoints,
            deployment=reader.text("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime"),
            auth=auth,
            api_key=Secret(key) if key else None,
            client_id=client_id,
            key_ttl_seconds=reader.integer(
                "REALTIME_KEY_TTL_SECONDS", 60, minimum=10, maximum=7200
            ),
            connect_timeout=reader.number(
                "UPSTREAM_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.05, maximum=60.0
            ),
            request_timeout=request_timeout,
            deadline=reader.number(
                "UPSTREAM_DEADLINE_SECONDS",
                max(15.0, request_timeout),
                minimum=0.05,
                maximum=300.0,
            ),
            credential_timeout=credential_timeout,
            failure_threshold=reader.integer(
                "ENDPOINT_FAILURE_THRESHOLD", 3, minimum=1, maximum=1000
            ),
            cooldown_seconds=reader.number(
                "ENDPOINT_COOLDOWN_SECONDS", 30.0, minimum=0.0, maximum=3600.0
            ),
            webrtc_filter=reader.flag("REALTIME_WEBRTC_FILTER", default=True),
            agents_file=reader.optional("AGENTS_FILE"),
            key_vault_url=_vault_url(reader, vault_users),
            key_vault_secret_name=reader.text(
                "KEY_VAULT_SECRET_NAME", DEFAULT_KEY_VAULT_SECRET_NAME
            ),
            key_vault_refresh_seconds=refresh_seconds,
            voicelive=voicelive,
            default_upstream=_default_upstream(reader, configured),
            call_max_seconds=_call_max_seconds(reader),
            call_max_concurrent_per_user=reader.integer(
                "CALL_MAX_CONCURRENT_PER_USER", 2, minimum=1, maximum=1000
            ),
            capture_process=reader.flag("REALTIME_CAPTURE_PROCESS", default=True),
            capture_priority=reader.choice("REALTIME_CAPTURE_PRIORITY", "normal", PRIORITIES),
        )
