"""Who may call the emulator: Azure's two resource keys, Entra bearer tokens, ephemeral keys.

Resource keys and bearer tokens authenticate ``client_secrets`` and ``hangup``; the
ephemeral keys minted there authenticate exactly one ``calls`` request before their
expiry. Values are compared in constant time and never leave this module except once,
in the answer to a mint or a key regeneration.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import itertools
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Literal

import msgspec

from engram_voice.credentials.secret import Secret
from engram_voice.emulator.azure_errors import AzureApiError

__all__ = [
    "FINGERPRINT_HEX",
    "KEEP_EXPIRED_SECONDS",
    "MAX_KEYS",
    "AuthSlot",
    "EphemeralKey",
    "EphemeralKeyStore",
    "KeyRing",
    "bearer_token",
    "fingerprint",
]

AuthSlot = Literal["key1", "key2", "bearer"]

_MISSING_MESSAGE = (
    "Access denied due to missing subscription key. Make sure to include subscription key "
    "when making requests to an API."
)
_BEARER_PREFIX = "bearer "
_EPHEMERAL_PREFIX = "ek_"
KEEP_EXPIRED_SECONDS = 3600
"""How long an expired key is still recognised (answering ``ephemeral_token_expired``)."""
MAX_KEYS = 10_000
"""At most this many keys are stored; the longest-expired one makes room first."""


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
    expired: bool = False
    """Set once the store has counted the key as expired (housekeeping, not the check)."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


FINGERPRINT_HEX = 16
"""Hex digits of a key's SHA-256 that name it in the emulator's log."""


def fingerprint(value: str) -> str:
    """Return the name ``emulator.mint_accepted`` logs a key by (reveals nothing of it).

    A benchmark client, which sees the key in the service's answer, matches its mints to
    the emulator's log lines with it.
    """
    return _digest(value)[:FINGERPRINT_HEX]


class EphemeralKeyStore:
    """Issues single-use ephemeral keys and redeems each one at most once before expiry.

    Housekeeping touches O(1) keys per mint, amortised (plus an O(log n) heap push): each key
    moves once from the *live* heap (ordered by expiry) to the *expired* queue (ordered by
    expiry too, since keys enter it in that order) and leaves once, from the queue's front,
    an hour after it expired or when the store is full. The counts that ``counts`` reports
    are kept up to date on those moves instead of being recomputed by a scan.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_keys: int = MAX_KEYS,
        keep_expired_seconds: int = KEEP_EXPIRED_SECONDS,
    ) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._keep_expired = keep_expired_seconds
        self._keys: dict[str, EphemeralKey] = {}
        self._live: list[tuple[int, int, EphemeralKey]] = []  # heap by expiry, then order
        self._expired: deque[EphemeralKey] = deque()  # ordered by expiry
        self._order = itertools.count()
        self._used = 0
        self._expired_unused = 0
        self._evicted = 0
        self._latest = float("-inf")

    def issue(self, session: dict[str, Any], seconds: int) -> tuple[str, EphemeralKey]:
        """Mint a key for ``session`` valid for ``seconds``; return its value and record."""
        now = self._clock()
        self._housekeep(now)
        while len(self._keys) >= self._max_keys:
            self._evict_one()
        value = f"{_EPHEMERAL_PREFIX}{secrets.token_urlsafe(24)}"
        key = EphemeralKey(
            digest=_digest(value),
            created_at=now,
            expires_at=int(now) + seconds,
            session=session,
        )
        self._keys[key.digest] = key
        heapq.heappush(self._live, (key.expires_at, next(self._order), key))
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
        self._used += 1
        if key.expired:  # counted as expired before the wall clock stepped back
            self._expired_unused -= 1
        return key

    def counts(self) -> dict[str, int]:
        """Return how many keys are stored, used, expired unused and evicted (no values)."""
        self._housekeep(self._clock())
        return {
            "issued": len(self._keys),
            "used": self._used,
            "expired_unused": self._expired_unused,
            "evicted": self._evicted,
        }

    def __len__(self) -> int:
        return len(self._keys)

    def _housekeep(self, now: float) -> None:
        """Move keys that expired by ``now`` to the queue; forget those expired long ago.

        Time only moves forward here: a wall clock stepping back revives no count.
        """
        now = self._latest = max(self._latest, now)
        live = self._live
        while live and now >= live[0][0]:
            key = heapq.heappop(live)[2]
            key.expired = True
            if key.used_by is None:
                self._expired_unused += 1
            self._expired.append(key)
        expired = self._expired
        while expired and now > expired[0].expires_at + self._keep_expired:
            self._forget(expired.popleft())

    def _evict_one(self) -> None:
        """Make room: the longest-expired key goes first, else the live one expiring next."""
        if self._expired:
            self._forget(self._expired.popleft())
        else:
            self._forget(heapq.heappop(self._live)[2])

    def _forget(self, key: EphemeralKey) -> None:
        self._evicted += 1
        del self._keys[key.digest]
        if key.used_by is not None:
            self._used -= 1
        elif key.expired:
            self._expired_unused -= 1
