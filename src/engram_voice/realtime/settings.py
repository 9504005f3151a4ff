"""Settings of the realtime (token vending) path: endpoints, credential, timeouts."""

from __future__ import annotations

from urllib.parse import urlsplit

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.netutil import is_loopback_host

__all__ = ["AUTH_CHOICES", "DEFAULT_KEY_VAULT_SECRET_NAME", "RealtimeSettings"]

AUTH_CHOICES = ("api-key", "entra", "key-vault")
DEFAULT_KEY_VAULT_SECRET_NAME = "voicelive-api-key"  # noqa: S105 - the secret's name, not a value


def _endpoint_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        return f"AZURE_OPENAI_ENDPOINTS entry {url!r} is not an http(s) URL"
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        return f"AZURE_OPENAI_ENDPOINTS entry {url!r} must use https (http only for loopback)"
    if parts.query or parts.fragment:
        return f"AZURE_OPENAI_ENDPOINTS entry {url!r} must not carry a query or fragment"
    return None


def _vault_url(reader: EnvReader, auth: str) -> str | None:
    url = reader.optional("KEY_VAULT_URL")
    if auth != "key-vault":
        return url
    if url is None:
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


class RealtimeSettings(msgspec.Struct, frozen=True):
    """Where and how the service mints realtime ephemeral keys."""

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

    @classmethod
    def from_env(cls, reader: EnvReader) -> RealtimeSettings:
        """Read the realtime settings, recording every problem on ``reader``."""
        endpoints = tuple(e.rstrip("/") for e in reader.items("AZURE_OPENAI_ENDPOINTS"))
        if not endpoints:
            reader.fail(
                "AZURE_OPENAI_ENDPOINTS is required: the Azure OpenAI resource URL(s) in "
                "priority order, e.g. https://my-resource.openai.azure.com"
            )
        for url in endpoints:
            if problem := _endpoint_problem(url):
                reader.fail(problem)
        auth = reader.choice("AZURE_OPENAI_AUTH", "api-key", AUTH_CHOICES)
        key = reader.optional("AZURE_OPENAI_API_KEY")
        if auth == "api-key" and not key:
            reader.fail(
                "AZURE_OPENAI_API_KEY is required when AZURE_OPENAI_AUTH=api-key "
                "(or set AZURE_OPENAI_AUTH=key-vault or entra to use a managed identity)"
            )
        request_timeout = reader.number(
            "UPSTREAM_TIMEOUT_SECONDS", 10.0, minimum=0.05, maximum=120.0
        )
        return cls(
            endpoints=endpoints,
            deployment=reader.text("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime"),
            auth=auth,
            api_key=Secret(key) if key else None,
            client_id=reader.optional("AZURE_CLIENT_ID"),
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
            credential_timeout=reader.number(
                "CREDENTIAL_TIMEOUT_SECONDS", 5.0, minimum=0.05, maximum=120.0
            ),
            failure_threshold=reader.integer(
                "ENDPOINT_FAILURE_THRESHOLD", 3, minimum=1, maximum=1000
            ),
            cooldown_seconds=reader.number(
                "ENDPOINT_COOLDOWN_SECONDS", 30.0, minimum=0.0, maximum=3600.0
            ),
            webrtc_filter=reader.flag("REALTIME_WEBRTC_FILTER", default=True),
            agents_file=reader.optional("AGENTS_FILE"),
            key_vault_url=_vault_url(reader, auth),
            key_vault_secret_name=reader.text(
                "KEY_VAULT_SECRET_NAME", DEFAULT_KEY_VAULT_SECRET_NAME
            ),
            key_vault_refresh_seconds=reader.number(
                "KEY_VAULT_REFRESH_SECONDS", 300.0, minimum=5.0, maximum=86400.0
            ),
        )
