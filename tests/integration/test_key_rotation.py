"""Operators rotate the Azure key in Key Vault while mints run: the service follows, none fail.

Each test runs its own emulator (its keys get regenerated) and an HTTPS Key Vault stand-in
read by the real SDK; the service reads the key through the Key Vault source injected with
``Overrides`` and started by the lifespan, exactly as in production.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import httpx

from tests.conftest import Emulator, ServiceFactory
from tests.support.key_rotation import NAME, key_vault_service, regenerate
from tests.support.keyvault import KeyVaultStandIn
from tests.support.polling import poll_until


class MintLoop:
    """Workers that mint sessions back to back (paced) and record every answer's status."""

    def __init__(self, url: str, *, workers: int = 1, pace_seconds: float = 0.02) -> None:
        self._url = url
        self._pace = pace_seconds
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.statuses: list[int] = []
        self._threads = [
            threading.Thread(target=self._run, name=f"mint-loop-{i}", daemon=True)
            for i in range(workers)
        ]

    def __enter__(self) -> MintLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(timeout=20) as client:
            while not self._stop.is_set():
                response = client.post(f"{self._url}/realtime/sessions", json={"agent": "elena"})
                with self._lock:
                    self.statuses.append(response.status_code)
                self._stop.wait(self._pace)

    def count(self) -> int:
        """Return how many mints answered so far."""
        with self._lock:
            return len(self.statuses)

    def wait_for_more(self, n: int, *, timeout: float = 20.0) -> None:
        """Wait until ``n`` more mints answered."""
        target = self.count() + n
        poll_until(lambda: self.count() >= target, timeout=timeout, what=f"{n} more mints")


def last_auth(emulator: Emulator) -> Any:
    """Return which key slot authenticated the emulator's latest successful mint."""
    mints: list[dict[str, Any]] = emulator.state()["mints"]  # type: ignore[assignment]
    accepted = [m for m in mints if m["status"] == 200]
    return accepted[-1]["auth"] if accepted else None


def credential_status(url: str) -> dict[str, Any]:
    """Return the credential part of the service's /status."""
    status: dict[str, Any] = httpx.get(f"{url}/status", timeout=10).json()
    credential: dict[str, Any] = status["realtime"]["credential"]
    return credential


def test_two_key_rotation_is_followed_by_the_refresh_with_no_failed_mint(
    own_emulator: Emulator, vault: KeyVaultStandIn, make_service: ServiceFactory
) -> None:
    """Regenerate key 2, store it as a new version, wait one refresh, regenerate key 1: all 201."""
    env, overrides = key_vault_service(vault, own_emulator, refresh_seconds=0.5)
    with make_service(env, overrides) as url, MintLoop(url) as loop:
        loop.wait_for_more(5)
        assert last_auth(own_emulator) == "key1"
        new_version = vault.set_secret(NAME, regenerate(own_emulator, 2))
        poll_until(
            lambda: last_auth(own_emulator) == "key2",
            timeout=10,
            what="the emulator seeing key 2",
        )
        regenerate(own_emulator, 1)
        loop.wait_for_more(10)
        status = credential_status(url)
    assert Counter(loop.statuses) == {201: len(loop.statuses)}
    assert own_emulator.state()["counters"]["client_secrets"].get("401") is None  # type: ignore[index]
    assert status["version"] == new_version[:8]
    assert status["last_refresh_error"] is None


def test_revoking_the_old_key_before_the_refresh_is_healed_by_one_read_after_401(
    own_emulator: Emulator, vault: KeyVaultStandIn, make_service: ServiceFactory
) -> None:
    """With a 5-minute refresh, the first 401 after key 1 is revoked reads Key Vault once."""
    env, overrides = key_vault_service(vault, own_emulator, refresh_seconds=300)
    with make_service(env, overrides) as url, MintLoop(url, workers=4) as loop:
        loop.wait_for_more(8)
        reads_before = vault.reads
        new_version = vault.set_secret(NAME, regenerate(own_emulator, 2))
        regenerate(own_emulator, 1)
        poll_until(
            lambda: last_auth(own_emulator) == "key2",
            timeout=10,
            what="the emulator seeing key 2",
        )
        loop.wait_for_more(10)
        status = credential_status(url)
    assert Counter(loop.statuses) == {201: len(loop.statuses)}
    refused = own_emulator.state()["counters"]["client_secrets"].get("401")  # type: ignore[index]
    assert 1 <= refused <= 4  # at most the mints in flight when key 1 was revoked
    assert vault.reads == reads_before + 1
    assert status["version"] == new_version[:8]


def test_key_vault_down_keeps_minting_on_the_cached_key_and_status_shows_it(
    own_emulator: Emulator, vault: KeyVaultStandIn, make_service: ServiceFactory
) -> None:
    """While the vault refuses connections mints succeed, /readyz is 200, /status shows the age."""
    env, overrides = key_vault_service(vault, own_emulator, refresh_seconds=0.3, timeout=0.5)
    version = vault.secrets[NAME][-1].version
    with make_service(env, overrides) as url:
        vault.stop()
        poll_until(
            lambda: credential_status(url)["last_refresh_error"] is not None,
            timeout=10,
            what="a refresh error in /status",
        )
        minted = [
            httpx.post(f"{url}/realtime/sessions", json={"agent": "sage"}, timeout=20)
            for _ in range(3)
        ]
        ready = httpx.get(f"{url}/readyz", timeout=10)
        down = credential_status(url)
        vault.start()
        poll_until(
            lambda: credential_status(url)["last_refresh_error"] is None,
            timeout=10,
            what="the refresh recovering",
        )
    assert [r.status_code for r in minted] == [201, 201, 201]
    assert ready.status_code == 200
    assert down["kind"] == "key-vault"
    assert down["version"] == version[:8]
    assert "could not be reached" in down["last_refresh_error"]
    assert down["age_seconds"] >= 0
    assert down["fetched_at"] is not None
    assert own_emulator.keys[0] not in str(down)
