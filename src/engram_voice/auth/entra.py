"""``AUTH_MODE=entra``: validate a Microsoft Entra ID access token from ``Authorization``.

Only RS256 tokens signed by a key in the tenant's JWKS are accepted; issuer, audience,
expiry and not-before are checked (with a small leeway), the user id is the ``oid``
claim, and the token must be a delegated (user) token: app-only tokens carry no ``scp``
and may not mint on a user's behalf. Error details say what was wrong with the token,
never the token itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import jwt
import structlog

from engram_voice.auth.caller import Caller, lower_headers, user_id_problem
from engram_voice.auth.jwks import JwksCache
from engram_voice.auth.settings import EntraSettings
from engram_voice.errors import AuthenticationError, ForbiddenError

__all__ = ["EntraAuthenticator", "bearer_token"]

_logger = structlog.get_logger("engram_voice.auth")
_MAX_TOKEN_CHARS = 16_384
_ALGORITHMS = ["RS256"]
_MALFORMED = "The access token is not a well-formed JWT."


def _rejected(reason: str, detail: str) -> AuthenticationError:
    _logger.info("auth.token_rejected", reason=reason)
    return AuthenticationError(detail, extra={"reason": reason})


def bearer_token(headers: Mapping[str, str]) -> str:
    """Return the bearer token of ``headers`` or raise a 401 saying what is wrong."""
    value = lower_headers(headers).get("authorization", "").strip()
    if not value:
        raise _rejected(
            "missing_token", "Sign in first: the request has no 'Authorization: Bearer' token."
        )
    scheme, _, token = value.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > _MAX_TOKEN_CHARS:
        raise _rejected(
            "malformed_header", "The Authorization header must be 'Bearer <access token>'."
        )
    return token


# Most specific first: InvalidSignatureError is a DecodeError, every one an InvalidTokenError.
_CLAIM_FAILURES: tuple[tuple[type[jwt.InvalidTokenError], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "The access token has expired; get a new one."),
    (jwt.ImmatureSignatureError, "not_yet_valid", "The access token is not valid yet (nbf/iat)."),
    (
        jwt.InvalidAudienceError,
        "wrong_audience",
        "The access token was issued for another audience.",
    ),
    (
        jwt.InvalidIssuerError,
        "wrong_issuer",
        "The access token was issued by an unexpected issuer.",
    ),
    (jwt.InvalidSignatureError, "bad_signature", "The access token's signature is invalid."),
    (jwt.InvalidAlgorithmError, "bad_algorithm", "The access token must be signed with RS256."),
    (jwt.DecodeError, "malformed_token", _MALFORMED),
)


def _claims_error(exc: jwt.InvalidTokenError) -> AuthenticationError:
    """Translate a PyJWT validation failure into a 401 with a precise, token-free detail."""
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return _rejected("missing_claim", f"The access token lacks the '{exc.claim}' claim.")
    for kind, reason, detail in _CLAIM_FAILURES:
        if isinstance(exc, kind):
            return _rejected(reason, detail)
    return _rejected("invalid_token", "The access token is invalid.")


class EntraAuthenticator:
    """Authenticates callers by their Entra ID access token (RS256, tenant JWKS)."""

    def __init__(
        self,
        settings: EntraSettings,
        http: httpx.AsyncClient,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._keys = JwksCache(
            settings.jwks_url,
            http,
            cache_seconds=settings.jwks_cache_seconds,
            min_refetch_seconds=settings.jwks_min_refetch_seconds,
            timeout_seconds=settings.jwks_timeout_seconds,
            clock=clock,
        )

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """Return the caller named by a valid token's ``oid``; raise 401/403/503 otherwise."""
        token = bearer_token(headers)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            # Not only DecodeError: PyJWT refuses odd header fields (a non-string kid, an
            # unsupported crit) with the base class. Whatever it is, the token does not parse.
            raise _rejected("malformed_token", _MALFORMED) from None
        if header.get("alg") not in _ALGORITHMS:
            raise _rejected("bad_algorithm", "The access token must be signed with RS256.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _rejected("missing_kid", "The access token names no signing key (kid).")
        key = await self._keys.key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=_ALGORITHMS,
                audience=list(self._settings.audiences),
                issuer=list(self._settings.issuers),
                leeway=self._settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "oid"]},
            )
        except jwt.InvalidTokenError as exc:
            raise _claims_error(exc) from None
        return self._caller(claims)

    def _caller(self, claims: Mapping[str, Any]) -> Caller:
        oid = claims.get("oid")
        if not isinstance(oid, str) or user_id_problem(oid.strip()):
            raise _rejected("missing_claim", "The access token's 'oid' claim is not a user id.")
        scopes = claims.get("scp")
        if not isinstance(scopes, str) or not scopes.split():
            _logger.info("auth.forbidden", reason="app_only_token")
            raise ForbiddenError(
                "App-only tokens cannot mint: sign in as a user (the token has no 'scp' claim)."
            )
        required = self._settings.required_scopes
        if required and not set(required).intersection(scopes.split()):
            _logger.info("auth.forbidden", reason="missing_scope")
            raise ForbiddenError(
                f"The access token lacks the required scope (one of: {', '.join(required)})."
            )
        name = next(
            (
                value
                for claim in ("name", "preferred_username", "upn")
                if isinstance(value := claims.get(claim), str) and value
            ),
            None,
        )
        return Caller(user_id=oid.strip(), display_name=name, auth_mode="entra")
