"""Settings of caller authentication, the per-user mint rate limit and CORS.

``AUTH_MODE`` picks how callers prove who they are: ``entra`` (an Entra ID access token),
``easyauth`` (principal headers injected by Azure Container Apps built-in auth) or
``none`` (local development only). ``none`` on a network-reachable bind address stops
start-up unless ``AUTH_ALLOW_NONE_ON_NETWORK`` forces it.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import limits
import msgspec

from engram_voice.auth.caller import user_id_problem
from engram_voice.envreader import EnvReader
from engram_voice.netutil import is_loopback_host

__all__ = ["AUTH_MODES", "AuthSettings", "EntraSettings", "is_loopback_host"]

AUTH_MODES = ("entra", "easyauth", "none")
_MICROSOFT_LOGIN = "https://login.microsoftonline.com"


class EntraSettings(msgspec.Struct, frozen=True):
    """How Entra ID access tokens are validated (used when ``AUTH_MODE=entra``)."""

    tenant_id: str
    audiences: tuple[str, ...]
    issuers: tuple[str, ...]
    jwks_url: str
    leeway_seconds: int
    jwks_cache_seconds: float
    jwks_min_refetch_seconds: float
    jwks_timeout_seconds: float
    required_scopes: tuple[str, ...]

    @classmethod
    def from_env(cls, reader: EnvReader, *, required: bool) -> EntraSettings:
        """Read the Entra settings; tenant and audience are required when ``required``."""
        why = "when AUTH_MODE=entra"
        tenant = (
            reader.require("ENTRA_TENANT_ID", f"{why} (the directory (tenant) id)")
            if required
            else reader.optional("ENTRA_TENANT_ID") or ""
        )
        audiences = reader.items("ENTRA_AUDIENCE")
        if required and not audiences:
            reader.fail(
                "ENTRA_AUDIENCE is required when AUTH_MODE=entra: the accepted token "
                "audiences, comma-separated, e.g. api://engram-voice,<application client id>"
            )
        issuers = reader.items(
            "ENTRA_ISSUER",
            (f"{_MICROSOFT_LOGIN}/{tenant}/v2.0", f"https://sts.windows.net/{tenant}/"),
        )
        jwks_url = reader.text("ENTRA_JWKS_URL", f"{_MICROSOFT_LOGIN}/{tenant}/discovery/v2.0/keys")
        if required and (problem := _jwks_url_problem(jwks_url)):
            reader.fail(problem)
        return cls(
            tenant_id=tenant,
            audiences=audiences,
            issuers=issuers,
            jwks_url=jwks_url,
            leeway_seconds=reader.integer("ENTRA_LEEWAY_SECONDS", 60, minimum=0, maximum=600),
            jwks_cache_seconds=reader.number(
                "ENTRA_JWKS_CACHE_SECONDS", 3600.0, minimum=1.0, maximum=86400.0
            ),
            jwks_min_refetch_seconds=reader.number(
                "ENTRA_JWKS_MIN_REFETCH_SECONDS", 60.0, minimum=0.0, maximum=3600.0
            ),
            jwks_timeout_seconds=reader.number(
                "ENTRA_JWKS_TIMEOUT_SECONDS", 5.0, minimum=0.05, maximum=60.0
            ),
            required_scopes=reader.items("ENTRA_REQUIRED_SCOPES"),
        )


def _jwks_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return None
    if parts.scheme == "http" and parts.hostname and is_loopback_host(parts.hostname):
        return None
    return f"ENTRA_JWKS_URL={url!r} must be an https URL (plain http only for loopback)"


def _origins(reader: EnvReader) -> tuple[str, ...]:
    origins: list[str] = []
    for item in reader.items("CORS_ALLOW_ORIGINS"):
        origin = item.rstrip("/")
        parts = urlsplit(origin)
        if (
            parts.scheme not in {"http", "https"}
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or "*" in origin
        ):
            reader.fail(
                f"CORS_ALLOW_ORIGINS entry {item!r} must be an origin like "
                "https://app.example.com (scheme, host and optional port; no wildcard, no path)"
            )
            continue
        origins.append(origin)
    return tuple(origins)


def _rate_limit(reader: EnvReader) -> str | None:
    enabled = reader.flag("RATE_LIMIT_ENABLED", default=True)
    text = reader.text("MINT_RATE_LIMIT", "20/minute")
    try:
        limits.parse_many(text)
    except ValueError:
        reader.fail(
            f"MINT_RATE_LIMIT={text!r} is not a rate limit: use e.g. 20/minute "
            "or 20/minute;200/hour"
        )
        return None
    return text if enabled else None


def _local_user_id(reader: EnvReader) -> str:
    user_id = reader.text("LOCAL_USER_ID", "local-user")
    if problem := user_id_problem(user_id):
        reader.fail(f"LOCAL_USER_ID={user_id!r} is not a usable user id: {problem}")
    return user_id


class AuthSettings(msgspec.Struct, frozen=True):
    """Caller authentication mode, the mint rate limit and the CORS allow-list."""

    mode: str
    bind_host: str
    allow_none_on_network: bool
    local_user_id: str
    entra: EntraSettings
    mint_rate_limit: str | None
    cors_allow_origins: tuple[str, ...]

    @property
    def none_on_network(self) -> bool:
        """Return True when authentication is off on a network-reachable bind (forced)."""
        return self.mode == "none" and not is_loopback_host(self.bind_host)

    @classmethod
    def from_env(cls, reader: EnvReader, *, bind_host: str) -> AuthSettings:
        """Read the auth settings, recording every problem on ``reader``."""
        mode = reader.choice("AUTH_MODE", "entra", AUTH_MODES)
        force = reader.flag("AUTH_ALLOW_NONE_ON_NETWORK", default=False)
        if mode == "none" and not is_loopback_host(bind_host) and not force:
            reader.fail(
                f"AUTH_MODE=none disables authentication, so it only runs on a loopback "
                f"bind (127.0.0.1, ::1, localhost), but HOST={bind_host!r}. Use AUTH_MODE=entra "
                "or easyauth, bind to 127.0.0.1, or set AUTH_ALLOW_NONE_ON_NETWORK=true to "
                "accept that anyone who can reach the port mints credentials"
            )
        return cls(
            mode=mode,
            bind_host=bind_host,
            allow_none_on_network=force,
            local_user_id=_local_user_id(reader),
            entra=EntraSettings.from_env(reader, required=mode == "entra"),
            mint_rate_limit=_rate_limit(reader),
            cors_allow_origins=_origins(reader),
        )
