"""Memory tokens: HMAC-signed grants to post transcript turns for one session.

A token is a JWT (HS256) whose ``kid`` header names the signing key, bound to the
session id, the user id and the agent. The first configured key signs; every configured
key verifies, so an operator rotates by prepending a new key and removing the old one
once its tokens have expired. Expiry is checked against an injected clock.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import jwt
import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.errors import AuthenticationError

__all__ = [
    "AZURE_MAX_SESSION_SECONDS",
    "IssuedMemoryToken",
    "MemoryClaims",
    "MemoryGrant",
    "MemoryTokenSigner",
]

AZURE_MAX_SESSION_SECONDS = 30 * 60
"""Azure caps one realtime session at 30 minutes; tokens must outlive it plus a grace."""

_AUDIENCE = "engram-voice/memory"
_ALGORITHM = "HS256"
_LEEWAY_SECONDS = 30
_VERIFIED_CACHE = 50_000


class IssuedMemoryToken(msgspec.Struct, frozen=True):
    """A freshly signed token and when it expires (unix seconds)."""

    token: str
    expires_at: int


class MemoryGrant(msgspec.Struct, frozen=True):
    """The ``memory`` object of ``POST /realtime/sessions``: where and with what to post turns."""

    enrich_url: str
    token: str
    expires_at: int


class MemoryClaims(msgspec.Struct, frozen=True):
    """What a verified token proves: who may write which session with which agent."""

    session_id: str
    user_id: str
    agent: str
    expires_at: int
    key_id: str


class MemoryTokenSigner:
    """Issues and verifies memory tokens with rotatable HMAC keys."""

    def __init__(
        self,
        keys: Sequence[tuple[str, Secret]],
        *,
        ttl_seconds: int = AZURE_MAX_SESSION_SECONDS + 900,
        enrich_url: str = "/memory/enrich",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not keys:
            raise ValueError("at least one memory token key is required")
        self._active_kid, active = keys[0]
        self._active = active.reveal().encode()
        self._signing = hmac.new(self._active, digestmod=hashlib.sha256)
        self._header = _header_segment(self._active_kid)
        self._keys = {kid: secret.reveal().encode() for kid, secret in keys}
        self._ttl = ttl_seconds
        self._enrich_url = enrich_url
        self._clock = clock
        self._verified: dict[str, MemoryClaims] = {}

    def __repr__(self) -> str:
        return f"MemoryTokenSigner(active_kid={self._active_kid!r}, keys={len(self._keys)})"

    def issue(self, *, session_id: str, user_id: str, agent: str) -> IssuedMemoryToken:
        """Sign a token that lets its bearer post turns for exactly this session."""
        now = int(self._clock())
        expires_at = now + self._ttl
        claims = {
            "sid": session_id,
            "sub": user_id,
            "agt": agent,
            "aud": _AUDIENCE,
            "iat": now,
            "exp": expires_at,
        }
        # What jwt.encode(claims, key, "HS256", headers={"kid": …}) returns, without its
        # per-call key checks (PEM/DER/JWK sniffing) and json.dumps: about 6 % of a mint's
        # CPU. The header segment is computed once; PyJWT verifies these tokens (tested).
        signing_input = self._header + b"." + _b64(msgspec.json.encode(claims))
        mac = self._signing.copy()
        mac.update(signing_input)
        token = (signing_input + b"." + _b64(mac.digest())).decode("ascii")
        return IssuedMemoryToken(token=token, expires_at=expires_at)

    def grant(self, session_id: str, user_id: str, agent: str) -> dict[str, Any]:
        """Return the response's ``memory`` object (the realtime MemoryGrantIssuer shape)."""
        issued = self.issue(session_id=session_id, user_id=user_id, agent=agent)
        grant = MemoryGrant(
            enrich_url=self._enrich_url, token=issued.token, expires_at=issued.expires_at
        )
        return msgspec.structs.asdict(grant)

    def verify(self, token: str) -> MemoryClaims:
        """Return the claims of a valid token; raise AuthenticationError (401) otherwise.

        A browser posts many times with one token, so verified claims are remembered
        (bounded); expiry is still checked on every call.
        """
        cached = self._verified.get(token)
        if cached is not None:
            self._check_expiry(cached.expires_at)
            return cached
        claims = self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = claims
        return claims

    def _check_expiry(self, expires_at: int) -> None:
        if self._clock() > expires_at + _LEEWAY_SECONDS:
            raise _invalid("the memory token has expired; start a new realtime session")

    def _verify(self, token: str) -> MemoryClaims:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("the memory token is malformed") from None
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise _invalid("the memory token was signed with an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[_ALGORITHM],
                audience=_AUDIENCE,
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "require": ["exp", "sid", "sub", "agt", "aud"],
                },
            )
        except jwt.PyJWTError:
            raise _invalid("the memory token signature or claims are invalid") from None
        expires_at, session_id = claims["exp"], claims["sid"]
        user_id, agent = claims["sub"], claims["agt"]
        if not isinstance(expires_at, int) or not all(
            isinstance(v, str) and v for v in (session_id, user_id, agent)
        ):
            raise _invalid("the memory token claims are invalid")
        self._check_expiry(expires_at)
        return MemoryClaims(
            session_id=session_id,
            user_id=user_id,
            agent=agent,
            expires_at=expires_at,
            key_id=str(kid),
        )


def _b64(data: bytes) -> bytes:
    """Return unpadded base64url, as JWS compact serialisation wants."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _header_segment(kid: str) -> bytes:
    """Return the encoded JOSE header PyJWT writes for HS256 with ``kid`` (sorted keys)."""
    header = {"alg": _ALGORITHM, "kid": kid, "typ": "JWT"}
    return _b64(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())


def _invalid(detail: str) -> AuthenticationError:
    return AuthenticationError(detail, extra={"errors": [{"field": "token", "message": detail}]})
