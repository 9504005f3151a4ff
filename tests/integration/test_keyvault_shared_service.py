"""The service with three secrets in one vault asks its managed identity for one token.

``engram-voice serve`` runs as a process with only environment variables:
``AZURE_OPENAI_AUTH``, ``AZURE_VOICELIVE_AUTH`` and ``MEMORY_POSTGRES_AUTH`` set to
``key-vault`` on the HTTPS Key Vault stand-in, azure-identity's managed identity pointed at
the local identity endpoint (which counts token requests), and a real PostgreSQL role whose
password is the vault's third secret.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.support.keyvault import KeyVaultStandIn, TlsFiles
from tests.support.managed_identity import ManagedIdentityEndpoint
from tests.support.polling import poll_until
from tests.support.postgres import PostgresServer
from tests.support.servers import ServiceProcess

KEYS = {"KEY_VAULT_SECRET_NAME": "openai-api-key", "AZURE_VOICELIVE_KEY_SECRET": "live-api-key"}


def _role(server: PostgresServer, password: str) -> str:
    """Create a role signing in with ``password`` and its own database; return its name."""
    role = f"kvs_{secrets.token_hex(4)}"
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")  # test-made values
        conn.execute(f"CREATE DATABASE {role} OWNER {role}")
    return role


def _status(service: ServiceProcess) -> dict[str, Any]:
    """Return the service's /status."""
    response = httpx.get(f"{service.base_url}/status", timeout=5)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def _connected(status: dict[str, Any]) -> dict[str, Any] | None:
    """Return ``status`` once the queue is connected (its password was read), else None."""
    connection = status["memory"]["queue"]["connection"]
    return status if connection["state"] == "connected" else None


@pytest.mark.parametrize("usage_store", ["sqlite", "postgres"])
def test_three_key_vault_secrets_take_one_identity_token(
    *,
    usage_store: str,
    postgres_server: PostgresServer,
    vault: KeyVaultStandIn,
    vault_tls: TlsFiles,
    vault_identity: ManagedIdentityEndpoint,
    tmp_path: Path,
) -> None:
    """The keys and the database password (also the usage store's) share one token and client.

    The one client is opened by the first reader and closed once, at shutdown, by the last.
    """
    password = secrets.token_urlsafe(24)
    role = _role(postgres_server, password)
    values = [f"{name}-value-0123456789" for name in KEYS.values()]
    for name, value in zip(KEYS.values(), values, strict=True):
        vault.set_secret(name, value)
    vault.set_secret("postgres-password", password)
    env = {
        "APP_ENV": "local",
        "LOG_FORMAT": "json",
        "AUTH_MODE": "none",
        "SERVE_WEB": "false",
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "AZURE_OPENAI_ENDPOINTS": "https://engram.openai.azure.com",
        "AZURE_OPENAI_AUTH": "key-vault",
        "AZURE_VOICELIVE_ENDPOINT": "https://engram.services.ai.azure.com",
        "AZURE_VOICELIVE_AUTH": "key-vault",
        **KEYS,
        "MEMORY_QUEUE": "postgres",
        "MEMORY_POSTGRES_HOST": postgres_server.host,
        "MEMORY_POSTGRES_PORT": str(postgres_server.port),
        "MEMORY_POSTGRES_DB": role,
        "MEMORY_POSTGRES_USER": role,
        "MEMORY_POSTGRES_SSLMODE": "disable",
        "MEMORY_POSTGRES_AUTH": "key-vault",
        "USAGE_STORE": usage_store,
        "USAGE_SQLITE_PATH": str(tmp_path / "usage.db"),
        "KEY_VAULT_URL": vault.url,
        "SSL_CERT_FILE": str(vault_tls.cert),
        **vault_identity.env(),
    }
    log = tmp_path / "service.log"
    service = ServiceProcess(["serve"], env=env, log_path=log).start()
    try:
        status = poll_until(
            lambda: _connected(_status(service)),
            timeout=30,
            what="the queue signing in with the vault's password",
        )
        assert len(vault_identity.requests) == 1
    finally:
        service.stop()
    upstreams = status["realtime"]["upstreams"]
    for upstream, secret in zip(upstreams.values(), KEYS.values(), strict=True):
        assert upstream["credential"]["secret_name"] == secret
    logged = service.read_log()
    assert logged.count('"credentials.keyvault_client_opened"') == 1
    assert logged.count('"credentials.keyvault_client_closed"') == 1  # at shutdown, once
    assert not [value for value in [*values, password] if value in logged]
