"""Fixtures shared by the integration tests: the Key Vault set-up (tests/support)."""

from __future__ import annotations

from tests.support.key_rotation import fixture_own_emulator
from tests.support.keyvault_fixtures import (
    fixture_vault,
    fixture_vault_identity,
    fixture_vault_sources,
    fixture_vault_tls,
)

__all__ = [
    "fixture_own_emulator",
    "fixture_vault",
    "fixture_vault_identity",
    "fixture_vault_sources",
    "fixture_vault_tls",
]
