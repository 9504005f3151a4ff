"""A local HTTPS Azure Key Vault stand-in (the secrets GET subset) for the real SDK.

It speaks what ``azure.keyvault.secrets.aio.SecretClient.get_secret`` needs: the bearer
challenge on unauthenticated requests (``WWW-Authenticate: Bearer authorization=...,
resource="https://vault.azure.net"``), ``GET /secrets/{name}/`` (latest version) and
``/secrets/{name}/{version}`` with a mandatory ``api-version``, Key Vault's error bodies for
401/403/404/503, and secret bundles whose ``id`` carries the version. Tests rotate a secret
with :meth:`KeyVaultStandIn.set_secret`, forbid one, make the vault answer 503, hang,
answer late (``delay``), or stop listening (connection refused) and start again on the
same port. The TLS certificate is made by :func:`make_certificate` for 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, unquote

import uvicorn
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.keyvault.secrets.aio import SecretClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engram_voice.credentials.keyvault import key_vault_client
from tests.support.polling import poll_until
from tests.support.servers import free_port

__all__ = ["FakeVaultCredential", "KeyVaultStandIn", "TlsFiles", "make_certificate"]

VAULT_RESOURCE = "https://vault.azure.net"
VAULT_SCOPE = f"{VAULT_RESOURCE}/.default"
HANG_LIMIT_SECONDS = 30.0
_HANG_POLL_SECONDS = 0.02

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class TlsFiles:
    """A self-signed certificate for 127.0.0.1/localhost and its private key (PEM files)."""

    cert: Path
    key: Path


def make_certificate(directory: Path) -> TlsFiles:
    """Write a fresh self-signed certificate for 127.0.0.1 and localhost into ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "engram-voice test vault")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(cert=directory / "vault-cert.pem", key=directory / "vault-key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


class FakeVaultCredential:
    """An async token credential (like ManagedIdentityCredential) that records its requests."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.requests: list[tuple[tuple[str, ...], str | None]] = []
        self.closed = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """Return the fixed token, recording the scopes and tenant the SDK asked for."""
        self.requests.append((scopes, kwargs.get("tenant_id")))
        return AccessToken(self.token, int(time.time()) + 3600)

    async def close(self) -> None:
        """Count the close (nothing to release)."""
        self.closed += 1


@dataclass
class _Version:
    version: str
    value: str
    created: int


@dataclass
class KeyVaultStandIn:
    """A Key Vault on https://127.0.0.1:<port> holding versioned secrets."""

    tls: TlsFiles
    tenant_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    token: str = field(default_factory=lambda: f"kv-token-{uuid.uuid4().hex}")
    port: int = field(default_factory=free_port)
    mode: str = "up"
    delay: float = 0.0
    """Seconds every answer waits first (a slow vault); 0: answer at once."""
    secrets: dict[str, list[_Version]] = field(default_factory=dict)
    forbidden: set[str] = field(default_factory=set)
    reads: int = 0
    challenges: int = 0
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Return the vault URL (what KEY_VAULT_URL names)."""
        return f"https://127.0.0.1:{self.port}"

    def set_secret(self, name: str, value: str) -> str:
        """Store ``value`` as a new version of ``name`` (a rotation) and return the version."""
        version = uuid.uuid4().hex
        self.secrets.setdefault(name, []).append(_Version(version, value, int(time.time())))
        return version

    def credential(self) -> FakeVaultCredential:
        """Return a credential whose token this vault accepts."""
        return FakeVaultCredential(self.token)

    def client(
        self, credential: FakeVaultCredential | None = None, *, timeout: float = 2.0
    ) -> SecretClient:
        """Return the real async SecretClient for this vault, trusting its certificate."""
        return key_vault_client(
            self.url,
            cast("AsyncTokenCredential", credential or self.credential()),
            timeout=timeout,
            connection_verify=str(self.tls.cert),
        )

    def start(self) -> KeyVaultStandIn:
        """Serve HTTPS on the vault's port (again, after :meth:`stop`) and wait until it listens."""
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self.port,
            ssl_certfile=str(self.tls.cert),
            ssl_keyfile=str(self.tls.key),
            log_config=None,
            lifespan="off",
            loop="asyncio",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, name=f"keyvault-{self.port}", daemon=True
        )
        self._thread.start()
        poll_until(
            lambda: self._server.started or not self._thread.is_alive(),
            timeout=20,
            interval=0.02,
            what=f"the Key Vault stand-in on port {self.port} starting",
        )
        if not self._server.started:
            msg = f"Key Vault stand-in on port {self.port} did not start"
            raise RuntimeError(msg)
        return self

    def stop(self) -> None:
        """Stop listening (clients then see connection refused); hung requests are released."""
        if self._server is None or self._thread is None:
            return
        self.mode = "up"
        self._server.should_exit = True
        self._server.force_exit = True  # do not wait for clients' keep-alive TLS connections
        self._thread.join(timeout=15)
        self._server = None
        self._thread = None

    async def _app(self, scope: dict[str, Any], _receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        status, body, headers = await self._answer(scope)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    *[(k.encode(), v.encode()) for k, v in headers.items()],
                ],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(body).encode()})

    async def _answer(self, scope: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        deadline = time.monotonic() + HANG_LIMIT_SECONDS
        # ``mode`` is flipped from the test's thread; a bounded poll is the thread-safe wait.
        while self.mode == "hang" and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(_HANG_POLL_SECONDS)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "unavailable":
            return _error(503, "ServiceUnavailable", "The service is unavailable.")
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        query = parse_qs(scope.get("query_string", b"").decode())
        if not query.get("api-version"):
            return _error(400, "BadParameter", "The api-version query parameter is missing.")
        authorization = headers.get("authorization", "")
        if authorization != f"Bearer {self.token}":
            self.challenges += 1
            status, body, _ = _error(
                401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."
            )
            challenge = (
                f'Bearer authorization="https://login.microsoftonline.com/{self.tenant_id}", '
                f'resource="{VAULT_RESOURCE}"'
            )
            return status, body, {"www-authenticate": challenge}
        parts = [unquote(p) for p in scope["path"].split("/") if p]
        if scope["method"] != "GET" or len(parts) not in {2, 3} or parts[0] != "secrets":
            return _error(400, "BadParameter", "Only GET /secrets/{name}/{version} is served.")
        self.reads += 1
        return self._secret(parts[1], parts[2] if len(parts) == 3 else "")

    def _secret(self, name: str, version: str) -> tuple[int, Any, dict[str, str]]:
        if name in self.forbidden:
            return _error(
                403,
                "Forbidden",
                "Caller is not authorized to perform action on resource. Action: "
                "'Microsoft.KeyVault/vaults/secrets/getSecret/action'. Assignment: (not found)",
                inner="ForbiddenByRbac",
            )
        versions = self.secrets.get(name, [])
        chosen = versions[-1] if versions and not version else None
        chosen = chosen or next((v for v in versions if v.version == version), None)
        if chosen is None:
            return _error(
                404,
                "SecretNotFound",
                f"A secret with (name/id) {name} was not found in this key vault.",
            )
        attributes = {
            "enabled": True,
            "created": chosen.created,
            "updated": chosen.created,
            "recoveryLevel": "Recoverable+Purgeable",
            "recoverableDays": 90,
        }
        body = {
            "value": chosen.value,
            "id": f"{self.url}/secrets/{name}/{chosen.version}",
            "attributes": attributes,
            "tags": {},
        }
        return 200, body, {}


def _error(
    status: int, code: str, message: str, *, inner: str | None = None
) -> tuple[int, Any, dict[str, str]]:
    error: dict[str, Any] = {"code": code, "message": message}
    if inner:
        error["innererror"] = {"code": inner}
    return status, {"error": error}, {}
