"""Rotating the Azure key as an operator does, for the key rotation tests.

``own_emulator`` (registered by ``tests/integration/conftest.py``) runs an emulator whose
two keys the test may regenerate (:func:`regenerate`, as in the Azure portal);
:func:`key_vault_service` seeds the Key Vault stand-in with its key 1 and returns the env
and the (unstarted) Key Vault source of a key-vault-mode service reading it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from engram_voice.services import Overrides
from tests.conftest import Emulator, service_env
from tests.support.keyvault import KeyVaultStandIn
from tests.support.keyvault_fixtures import stand_in_source
from tests.support.servers import ServiceProcess

__all__ = ["NAME", "fixture_own_emulator", "key_vault_service", "regenerate"]

NAME = "voicelive-api-key"
"""The secret holding the Azure key (the default ``KEY_VAULT_SECRET_NAME``)."""


@pytest.fixture(name="own_emulator")
def fixture_own_emulator(tmp_path: Path) -> Iterator[Emulator]:
    """Run an emulator whose two keys this test may regenerate."""
    keys = (secrets.token_hex(16), secrets.token_hex(16))
    process = ServiceProcess(
        ["emulator"],
        env={"EMULATOR_API_KEYS": ",".join(keys), "EMULATOR_BEARER_TOKENS": "unused-bearer"},
        log_path=tmp_path / "emulator.log",
    ).start()
    try:
        yield Emulator(process, keys, "unused-bearer")
    finally:
        process.stop()


def regenerate(emulator: Emulator, slot: int) -> str:
    """Regenerate the emulator's key ``slot`` (as in the Azure portal) and return the new key."""
    response = httpx.post(f"{emulator.url}/_emulator/keys/{slot}/regenerate", timeout=5)
    response.raise_for_status()
    key: str = response.json()["key"]
    return key


def key_vault_service(
    vault: KeyVaultStandIn, emulator: Emulator, *, refresh_seconds: float, timeout: float = 2.0
) -> tuple[dict[str, str], Overrides]:
    """Store the emulator's key 1 in ``vault``; return a key-vault service's env and source."""
    vault.set_secret(NAME, emulator.keys[0])
    env = service_env(
        emulator,
        AZURE_OPENAI_AUTH="key-vault",
        KEY_VAULT_URL=vault.url,
        RATE_LIMIT_ENABLED="false",
    )
    del env["AZURE_OPENAI_API_KEY"]
    source = stand_in_source(
        vault, secret_name=NAME, refresh_seconds=refresh_seconds, timeout=timeout
    )
    return env, Overrides(credentials=source)
