"""Settings of the Azure AI Voice Live upstream: resource, model, api-version, credential.

Voice Live is configured when ``AZURE_VOICELIVE_ENDPOINT`` is set; the seed (v1) names
``AZURE_VOICELIVE_ENDPOINT``, ``AZURE_VOICELIVE_KEY`` and ``AZURE_VOICELIVE_MODEL`` work as
they are. The credential mirrors Azure OpenAI's: an API key from configuration, the latest
version of a Key Vault secret (followed through rotation), or Microsoft Entra ID tokens
for the ``https://ai.azure.com/.default`` scope.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.netutil import is_loopback_host

__all__ = [
    "DEFAULT_VOICELIVE_API_VERSION",
    "DEFAULT_VOICELIVE_SECRET_NAME",
    "REFUSED_API_VERSIONS",
    "VOICELIVE_AUTH_CHOICES",
    "VOICELIVE_CALLS_PATH",
    "VoiceLiveSettings",
]

DEFAULT_VOICELIVE_API_VERSION = "2026-01-01-preview"
REFUSED_API_VERSIONS = frozenset({"2026-07-15", "v1"})
"""api-versions that do not serve ``/voice-live/realtime/calls`` (GA and the v1 label)."""
DEFAULT_VOICELIVE_SECRET_NAME = "voicelive-api-key"  # noqa: S105 - the secret's name, not a value
VOICELIVE_AUTH_CHOICES = ("api-key", "entra", "key-vault")
VOICELIVE_CALLS_PATH = "/voice-live/realtime/calls"


def _endpoint(reader: EnvReader, url: str) -> str:
    parts = urlsplit(url)
    name = "AZURE_VOICELIVE_ENDPOINT"
    if parts.scheme in {"wss", "ws"}:
        url = url.replace(parts.scheme, "https" if parts.scheme == "wss" else "http", 1)
        parts = urlsplit(url)
    if parts.scheme not in {"https", "http"} or not parts.hostname:
        reader.fail(
            f"{name}={url!r} is not an https URL, e.g. https://my-resource.services.ai.azure.com"
        )
    elif parts.scheme == "http" and not is_loopback_host(parts.hostname):
        reader.fail(f"{name}={url!r} must use https (http only for loopback, i.e. the emulator)")
    elif parts.query or parts.fragment or parts.path.strip("/"):
        reader.fail(
            f"{name}={url!r} must be the resource URL without a path or query, e.g. "
            "https://my-resource.services.ai.azure.com (the service adds "
            f"{VOICELIVE_CALLS_PATH})"
        )
    return url.rstrip("/")


def _api_version(reader: EnvReader) -> str:
    version = reader.text("AZURE_VOICELIVE_API_VERSION", DEFAULT_VOICELIVE_API_VERSION)
    if version.lower() in REFUSED_API_VERSIONS:
        reader.fail(
            f"AZURE_VOICELIVE_API_VERSION={version!r} does not serve WebRTC calls "
            f"({VOICELIVE_CALLS_PATH} answers 404 there); use {DEFAULT_VOICELIVE_API_VERSION} "
            "(or 2026-06-01-preview)"
        )
    return version


def _auth(reader: EnvReader, key: str | None, vault_url: str | None) -> str:
    """Read AZURE_VOICELIVE_AUTH; unset: api-key with a key, else key-vault with a vault."""
    default = "api-key" if key or vault_url is None else "key-vault"
    auth = reader.choice("AZURE_VOICELIVE_AUTH", default, VOICELIVE_AUTH_CHOICES)
    if auth == "api-key" and not key:
        reader.fail(
            "AZURE_VOICELIVE_KEY is required when AZURE_VOICELIVE_AUTH=api-key (the Voice Live "
            "resource's key), or set KEY_VAULT_URL to read secret AZURE_VOICELIVE_KEY_SECRET "
            "from Key Vault, or AZURE_VOICELIVE_AUTH=entra to use a managed identity"
        )
    if auth == "key-vault" and vault_url is None:
        reader.fail(
            "KEY_VAULT_URL is required when AZURE_VOICELIVE_AUTH=key-vault, "
            "e.g. https://my-vault.vault.azure.net"
        )
    return auth


class VoiceLiveSettings(msgspec.Struct, frozen=True):
    """Where and how the service opens Voice Live's WebRTC control channel."""

    endpoint: str
    model: str
    api_version: str
    auth: str
    api_key: Secret | None
    connect_timeout: float
    answer_timeout: float
    client_id: str | None = None
    key_vault_url: str | None = None
    key_vault_secret_name: str = DEFAULT_VOICELIVE_SECRET_NAME
    key_vault_refresh_seconds: float = 300.0
    credential_timeout: float = 5.0

    def calls_url(self) -> str:
        """Return the control WebSocket URL: ``wss://…/voice-live/realtime/calls?…``."""
        parts = urlsplit(self.endpoint)
        scheme = "ws" if parts.scheme == "http" else "wss"
        query = urlencode({"api-version": self.api_version, "model": self.model})
        return f"{scheme}://{parts.netloc}{VOICELIVE_CALLS_PATH}?{query}"

    @property
    def host(self) -> str:
        """Return the resource's host name (what operators recognise)."""
        return urlsplit(self.endpoint).hostname or self.endpoint

    @classmethod
    def from_env(
        cls,
        reader: EnvReader,
        *,
        vault_url: str | None,
        client_id: str | None,
        credential_timeout: float,
        refresh_seconds: float,
    ) -> VoiceLiveSettings | None:
        """Read Voice Live's settings, or None when ``AZURE_VOICELIVE_ENDPOINT`` is unset.

        The Key Vault, identity and credential-timeout values are the ones the service
        already uses for Azure OpenAI (one vault, one managed identity).
        """
        url = reader.optional("AZURE_VOICELIVE_ENDPOINT")
        if url is None:
            given = {
                "AZURE_VOICELIVE_KEY": reader.raw("AZURE_VOICELIVE_KEY"),
                "AZURE_VOICELIVE_AUTH": reader.raw("AZURE_VOICELIVE_AUTH"),
                "AZURE_VOICELIVE_MODEL": reader.raw("AZURE_VOICELIVE_MODEL"),
                "AZURE_VOICELIVE_API_VERSION": reader.raw("AZURE_VOICELIVE_API_VERSION"),
            }
            stray = [name for name, value in given.items() if value]
            if stray:
                reader.fail(
                    f"AZURE_VOICELIVE_ENDPOINT is required when {', '.join(stray)} is set: "
                    "the Voice Live resource URL, e.g. https://my-resource.services.ai.azure.com"
                )
            return None
        key = reader.optional("AZURE_VOICELIVE_KEY")
        return cls(
            endpoint=_endpoint(reader, url),
            model=reader.text("AZURE_VOICELIVE_MODEL", "gpt-realtime"),
            api_version=_api_version(reader),
            auth=_auth(reader, key, vault_url),
            api_key=Secret(key) if key else None,
            connect_timeout=reader.number(
                "VOICELIVE_CONNECT_TIMEOUT_SECONDS", 3.0, minimum=0.05, maximum=60.0
            ),
            answer_timeout=reader.number(
                "VOICELIVE_ANSWER_TIMEOUT_SECONDS", 10.0, minimum=0.05, maximum=120.0
            ),
            client_id=client_id,
            key_vault_url=vault_url,
            key_vault_secret_name=reader.text(
                "AZURE_VOICELIVE_KEY_SECRET", DEFAULT_VOICELIVE_SECRET_NAME
            ),
            key_vault_refresh_seconds=refresh_seconds,
            credential_timeout=credential_timeout,
        )
