"""Who may call the emulator: Azure's two resource keys, Entra bearer tokens, ephemeral keys.

Resource keys and bearer tokens authenticate ``client_secrets`` and ``hangup``; the
ephemeral keys minted there authenticate exactly one ``calls`` request before their
expiry. Values are compared in constant time and never leave this module except once,
in the answer to a mint or a key regeneration.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.emulator.azure_errors import AzureApiError

__all__ = ["AuthSlot", "EphemeralKey", "EphemeralKeyStore", "KeyRing", "bearer_token"]

AuthSlot = Literal["key1", "key2", "bearer"]

_MISSING_MESSAGE = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
_BEARER_PREFIX = "bearer "
_EPHEMERAL_PREFIX = "ek_"
_KEEP_EXPIRED_SECONDS = 3600
_MAX_KEYS = 10_000


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """Return the token of an ``Authorization: Bearer`` header, if any."""
    value = headers.get("authorization", "")
    if value[: len(_BEARER_PREFIX)].lower() != _BEARER_PREFIX:
        return None
    return value[len(_BEARER_PREFIX) :].strip() or None


def _matches(candidate: str, secret: str) -> bool:
    return hmac.compare_digest(candidate.encode(), secret.encode())


class KeyRing:
    """The resource's key1/key2 slots and the Entra tokens it accepts instead of a key."""

    def __init__(self, api_keys: tuple[Secret, Secret], bearer_tokens: tuple[Secret, ...]) -> None:
        self._slots: dict[int, Secret] = {1: api_keys[0], 2: api_keys[1]}
        self._bearer = bearer_tokens
        self.regenerations: dict[int, int] = {1: 0, 2: 0}

    def authenticate(self, headers: Mapping[str, str]) -> AuthSlot:
        """Return which credential authenticated ``headers`` or raise Azure's 401."""
        api_key = headers.get("api-key")
        if api_key is not None:
            for slot, secret in self._slots.items():
                if _matches(api_key, secret.reveal()):
                    return "key1" if slot == 1 else "key2"
            raise AzureApiError.invalid_key()
        token = bearer_token(headers)
        if token is None:
            raise AzureApiError.invalid_key(_MISSING_MESSAGE)
        if any(_matches(token, accepted.reveal()) for accepted in self._bearer):
            return "bearer"
        raise AzureApiError(
            401,
            "PermissionDenied" if not token.startswith(_EPHEMERAL_PREFIX) else "invalid_api_key",
            "The bearer token is not valid for this resource (ephemeral keys may only "
            "create calls).",
        )

    def regenerate(self, slot: int) -> str:
        """Replace the key in ``slot`` (1 or 2) by a new random key and return it once."""
        if slot not in self._slots:
            raise AzureApiError.bad_param("slot", "The key slot must be 1 or 2.")
        value = secrets.token_hex(16)
        self._slots[slot] = Secret(value)
        self.regenerations[slot] += 1
        return value


class EphemeralKey(msgspec.Struct, kw_only=True):
    """What a minted key is bound to; the value itself is only kept as a digest."""

    digest: str
    created_at: float
    expires_at: int
    session: dict[str, Any]
    used_by: str | None = None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class EphemeralKeyStore:
    """Issues single-use ephemeral keys and redeems each one at most once before expiry."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._keys: OrderedDict[str, EphemeralKey] = OrderedDict()

    def issue(self, session: dict[str, Any], seconds: int) -> tuple[str, EphemeralKey]:
        """Mint a key for ``session`` valid for ``seconds``; return its value and record."""
        now = self._clock()
        self._prune(now)
        value = f"{_EPHEMERAL_PREFIX}{secrets.token_urlsafe(24)}"
        key = EphemeralKey(
            digest=_digest(value),
            created_at=now,
            expires_at=int(now) + seconds,
            session=session,
        )
        self._keys[key.digest] = key
        return value, key

    def check(self, value: str) -> EphemeralKey:
        """Return the usable key named by ``value`` or raise the 401 Azure sends."""
        key = self._keys.get(_digest(value)) if value.startswith(_EPHEMERAL_PREFIX) else None
        if key is None:
            raise AzureApiError(
                401, "invalid_api_key", "Incorrect API key provided: the ephemeral key is unknown."
            )
        if self._clock() >= key.expires_at:
            raise AzureApiError(
                401, "ephemeral_token_expired", "The ephemeral key has expired; mint a new one."
            )
        if key.used_by is not None:
            raise AzureApiError(
                401,
                "ephemeral_token_already_used",
                "The ephemeral key was already used to create a call; mint a new one.",
            )
        return key

    def redeem(self, value: str, call_id: str) -> EphemeralKey:
        """Mark the key named by ``value`` as used by ``call_id`` (checking it again first)."""
        key = self.check(value)
        key.used_by = call_id
        return key

    def counts(self) -> dict[str, int]:
        """Return how many keys are live, used or expired (never their values)."""
        now = self._clock()
        used = sum(1 for k in self._keys.values() if k.used_by is not None)
        expired = sum(1 for k in self._keys.values() if k.used_by is None and now >= k.expires_at)
        return {"issued": len(self._keys), "used": used, "expired_unused": expired}

    def _prune(self, now: float) -> None:
        stale = [d for d, k in self._keys.items() if now > k.expires_at + _KEEP_EXPIRED_SECONDS]
        for digest in stale:
            del self._keys[digest]
        while len(self._keys) >= _MAX_KEYS:
            self._keys.popitem(last=False)
