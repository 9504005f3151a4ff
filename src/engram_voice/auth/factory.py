"""Choose the authenticator for ``AUTH_MODE`` and say loudly when authentication is off."""

from __future__ import annotations

import httpx
import structlog

from engram_voice.auth.caller import Authenticator, NoAuthenticator
from engram_voice.auth.easyauth import EasyAuthAuthenticator
from engram_voice.auth.entra import EntraAuthenticator
from engram_voice.auth.settings import AuthSettings

__all__ = ["auth_warning", "build_authenticator"]

_logger = structlog.get_logger("engram_voice.auth")


def auth_warning(settings: AuthSettings) -> str | None:
    """Return the start-up warning ``settings`` deserve (authentication off), or None."""
    if settings.mode != "none":
        return None
    if settings.none_on_network:
        return (
            f"AUTHENTICATION IS OFF on a network-reachable bind ({settings.bind_host}), forced "
            "by AUTH_ALLOW_NONE_ON_NETWORK: anyone who can reach this port mints realtime "
            f"credentials and writes memory as the one user {settings.local_user_id!r}"
        )
    return (
        "authentication is off (AUTH_MODE=none): every request is the local user "
        f"{settings.local_user_id!r}; for development on this machine only"
    )


def build_authenticator(settings: AuthSettings, http: httpx.AsyncClient) -> Authenticator:
    """Return the authenticator of ``settings.mode``; ``http`` fetches the Entra JWKS."""
    if settings.mode == "entra":
        entra = settings.entra
        _logger.info(
            "auth.mode_entra",
            tenant_id=entra.tenant_id,
            audiences=list(entra.audiences),
            issuers=list(entra.issuers),
            jwks_url=entra.jwks_url,
        )
        return EntraAuthenticator(entra, http)
    if settings.mode == "easyauth":
        _logger.info("auth.mode_easyauth", trusts="x-ms-client-principal headers")
        return EasyAuthAuthenticator()
    _logger.warning(
        "auth.disabled_on_network" if settings.none_on_network else "auth.disabled",
        message=auth_warning(settings),
        bind_host=settings.bind_host,
        user_id=settings.local_user_id,
    )
    return NoAuthenticator(settings.local_user_id)
