"""Conversation ids that only the user who started a conversation can continue.

A conversation id is ``cv_<random>.<mac>`` where the MAC binds the random part to the
user id with the service's signing key, so continuing needs no shared state between
replicas and a user cannot adopt another user's conversation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from engram_voice.errors import ForbiddenError

__all__ = ["ConversationIds"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class ConversationIds:
    """Issues and checks user-bound conversation ids."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._keys = keys

    def _mac(self, key: bytes, user_id: str, nonce: str) -> str:
        digest = hmac.new(key, f"conversation:{user_id}:{nonce}".encode(), hashlib.sha256)
        return _b64(digest.digest()[:18])

    def new(self, user_id: str) -> str:
        """Return a fresh conversation id owned by ``user_id``."""
        nonce = _b64(secrets.token_bytes(12))
        return f"cv_{nonce}.{self._mac(self._keys[0], user_id, nonce)}"

    def resolve(self, user_id: str, conversation_id: str | None) -> str:
        """Return ``conversation_id`` if ``user_id`` owns it, a new one if absent, else 403."""
        if conversation_id is None:
            return self.new(user_id)
        nonce, _, mac = conversation_id.removeprefix("cv_").partition(".")
        for key in self._keys:
            if hmac.compare_digest(mac, self._mac(key, user_id, nonce)):
                return conversation_id
        raise ForbiddenError(
            "conversation_id does not belong to this user; omit it to start a new conversation.",
            extra={"errors": [{"field": "conversation_id", "message": "not yours"}]},
        )
