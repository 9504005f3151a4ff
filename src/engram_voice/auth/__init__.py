"""Caller identity (Entra ID, Container Apps EasyAuth or none), mint rate limit and CORS."""

from engram_voice.auth.caller import Authenticator, Caller, NoAuthenticator
from engram_voice.auth.cors import cors_config
from engram_voice.auth.easyauth import EasyAuthAuthenticator
from engram_voice.auth.entra import EntraAuthenticator
from engram_voice.auth.factory import auth_warning, build_authenticator
from engram_voice.auth.jwks import JwksCache
from engram_voice.auth.ratelimit import MintRateLimiter
from engram_voice.auth.settings import AUTH_MODES, AuthSettings, EntraSettings, is_loopback_host

__all__ = [
    "AUTH_MODES",
    "AuthSettings",
    "Authenticator",
    "Caller",
    "EasyAuthAuthenticator",
    "EntraAuthenticator",
    "EntraSettings",
    "JwksCache",
    "MintRateLimiter",
    "NoAuthenticator",
    "auth_warning",
    "build_authenticator",
    "cors_config",
    "is_loopback_host",
]
