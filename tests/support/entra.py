"""A test-made Entra ID tenant: RSA signing keys, their JWKS, signed access tokens."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from azure.core.credentials import AccessToken
from cryptography.hazmat.primitives.asymmetric import rsa

__all__ = ["FakeTokenCredential", "JwksEndpoint", "SigningKey", "Tenant", "jwks"]


class SigningKey:
    """An RSA key pair with a key id that publishes its public JWK and signs tokens."""

    def __init__(self, kid: str) -> None:
        self.kid = kid
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        """Return the public key as Entra publishes it (kty, use, kid, n, e)."""
        public: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(
            self.private_key.public_key(), as_dict=True
        )
        return {**public, "use": "sig", "kid": self.kid, "x5t": self.kid}


def jwks(*keys: SigningKey) -> dict[str, Any]:
    """Return a JWKS document publishing ``keys``."""
    return {"keys": [key.jwk() for key in keys]}


@dataclass
class Tenant:
    """The issuer, audience and default claims of a test tenant's access tokens."""

    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    audience: str = "api://engram-voice"
    client_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def issuer(self) -> str:
        """Return the v2.0 issuer of this tenant."""
        return f"https://login.microsoftonline.com/{self.tenant_id}/v2.0"

    @property
    def v1_issuer(self) -> str:
        """Return the v1.0 issuer of this tenant."""
        return f"https://sts.windows.net/{self.tenant_id}/"

    def env(self, jwks_url: str, **extra: str) -> dict[str, str]:
        """Return the environment of an entra-mode service trusting this tenant."""
        return {
            "AUTH_MODE": "entra",
            "ENTRA_TENANT_ID": self.tenant_id,
            "ENTRA_AUDIENCE": f"{self.audience},{self.client_id}",
            "ENTRA_JWKS_URL": jwks_url,
            **extra,
        }

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Return valid user-token claims; an override of None removes that claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "aud": self.audience,
            "iss": self.issuer,
            "iat": now - 10,
            "nbf": now - 10,
            "exp": now + 3600,
            "oid": "00000000-0000-0000-0000-0000000000a1",
            "tid": self.tenant_id,
            "sub": "subject-a1",
            "name": "Ada Lovelace",
            "preferred_username": "ada@example.com",
            "scp": "voice.session",
            "ver": "2.0",
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        key: SigningKey,
        *,
        kid: str | None = None,
        headers: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> str:
        """Return an RS256 access token signed by ``key`` (header kid defaults to its own)."""
        return jwt.encode(
            self.claims(**overrides),
            key.private_key,
            algorithm="RS256",
            headers={"kid": kid or key.kid, **(headers or {})},
        )


class JwksEndpoint:
    """A JWKS URL served through an in-process httpx transport that counts its requests."""

    url = "https://login.example.test/tenant/discovery/v2.0/keys"

    def __init__(self, *keys: SigningKey) -> None:
        self.document: Any = jwks(*keys)
        self.requests = 0
        self.status = 200
        self.down = False
        self.entered = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()

    def publish(self, *keys: SigningKey) -> None:
        """Replace the published keys (a key rotation)."""
        self.document = jwks(*keys)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        self.entered.set()
        await asyncio.wait_for(self.gate.wait(), timeout=10)
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if isinstance(self.document, bytes):
            return httpx.Response(self.status, content=self.document)
        return httpx.Response(self.status, json=self.document)

    def client(self) -> httpx.AsyncClient:
        """Return an httpx client whose requests this endpoint answers."""
        return httpx.AsyncClient(transport=httpx.MockTransport(self._handle), timeout=5.0)


class FakeTokenCredential:
    """An async token credential like ManagedIdentityCredential, issuing a fixed token."""

    def __init__(self, token: str, *, hang: bool = False) -> None:
        self.token = token
        self.hang = hang
        self.scopes: list[tuple[str, ...]] = []
        self._never = asyncio.Event()

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        """Return the token for ``scopes`` (or wait forever when hanging)."""
        self.scopes.append(scopes)
        if self.hang:
            await self._never.wait()
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        """Nothing to release."""
