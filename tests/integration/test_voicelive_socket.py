"""``open_control_socket`` against the emulator's Voice Live control channel, over real sockets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from engram_voice.credentials import EntraTokenSource, StaticKeySource, UpstreamCredential
from engram_voice.credentials.secret import Secret
from engram_voice.errors import (
    AppError,
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
)
from engram_voice.realtime.voicelive_settings import VoiceLiveSettings
from engram_voice.realtime.voicelive_socket import open_control_socket, upgrade_status
from tests.conftest import Emulator
from tests.support.servers import free_port


def settings_for(url: str, **changes: Any) -> VoiceLiveSettings:
    """Return api-key Voice Live settings for ``url`` (fields as the env reader builds them)."""
    values: dict[str, Any] = {
        "endpoint": url,
        "model": "gpt-realtime",
        "api_version": "2026-01-01-preview",
        "auth": "api-key",
        "api_key": None,
        "connect_timeout": 2.0,
        "answer_timeout": 2.0,
    }
    values.update(changes)
    return VoiceLiveSettings(**values)


class RotatingSource(StaticKeySource):
    """A key source whose 401 answer switches to ``next_key`` once (like a Key Vault re-read)."""

    def __init__(self, first: str, next_key: str | None) -> None:
        super().__init__(Secret(first))
        self.next_key = next_key
        self.invalidated = 0

    async def invalidate(self, used: UpstreamCredential) -> bool:  # noqa: ARG002
        """Switch to the next key, if there is one."""
        self.invalidated += 1
        if self.next_key is None:
            return False
        self._credential = UpstreamCredential(
            header="api-key", secret=Secret(self.next_key), kind=self.kind
        )
        self.next_key = None
        return True


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[aiohttp.ClientSession]:
    """Provide an aiohttp session for the control channel."""
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture(name="silent_port")
def fixture_silent_port() -> Iterator[int]:
    """Listen on a loopback port that accepts TCP connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("form", ["api-key", "bearer"])
async def test_the_configured_credential_opens_the_channel(
    emulator: Emulator, http: aiohttp.ClientSession, form: str
) -> None:
    """An api-key header or an Entra bearer token both upgrade the control channel."""

    async def token() -> str:
        return emulator.bearer

    source = (
        StaticKeySource(Secret(emulator.keys[0]))
        if form == "api-key"
        else EntraTokenSource(token, timeout=2, identity="test")
    )
    ws = await open_control_socket(http, settings_for(emulator.url), source)
    try:
        assert not ws.closed
    finally:
        await ws.close()
    record = emulator.state()["voicelive_calls"][-1]  # type: ignore[index]
    assert record["auth"] == ("key1" if form == "api-key" else "bearer")


@pytest.mark.parametrize(
    ("changes", "error", "status"),
    [
        ({"fault": "upgrade_401"}, UpstreamAuthError, 401),
        ({"fault": "upgrade_404"}, UpstreamRejectedError, 404),
        ({"api_version": "2026-07-15"}, UpstreamRejectedError, 404),
        ({"api_version": "2099-01-01-preview"}, UpstreamRejectedError, 400),
        ({"model": "x" * 200}, UpstreamRejectedError, 400),
    ],
)
async def test_refused_upgrades_become_domain_errors_with_their_status(
    emulator: Emulator,
    http: aiohttp.ClientSession,
    changes: dict[str, Any],
    error: type[AppError],
    status: int,
) -> None:
    """Each HTTP refusal of the upgrade maps to its error; no body or key in the detail."""
    changes = dict(changes)
    if fault := changes.pop("fault", None):
        emulator.fault(target="voicelive", mode=fault)
    source = StaticKeySource(Secret(emulator.keys[0]))
    with pytest.raises(error) as raised:
        await open_control_socket(http, settings_for(emulator.url, **changes), source)
    assert upgrade_status(raised.value) == status
    assert emulator.keys[0] not in raised.value.detail


async def test_a_401_is_retried_once_with_the_refreshed_key(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """A rotated key: the 401 invalidates the credential and the new one opens the channel."""
    source = RotatingSource("stale-key-not-known", emulator.keys[1])
    ws = await open_control_socket(http, settings_for(emulator.url), source)
    await ws.close()
    assert source.invalidated == 1


async def test_a_second_401_is_not_retried_again(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    """Without a newer key the 401 is final after one invalidate: no retry loop."""
    source = RotatingSource("stale-key-not-known", "also-not-known")
    with pytest.raises(UpstreamAuthError):
        await open_control_socket(http, settings_for(emulator.url), source)
    assert source.invalidated == 1


async def test_a_closed_port_is_unavailable(http: aiohttp.ClientSession) -> None:
    """Nothing listening: UpstreamUnavailableError naming the host."""
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UpstreamUnavailableError, match="could not be reached"):
        await open_control_socket(http, settings_for(url), StaticKeySource(Secret("k")))


async def test_a_silent_server_is_cut_off_by_the_connect_timeout(
    http: aiohttp.ClientSession, silent_port: int
) -> None:
    """A peer that accepts TCP but never answers the upgrade times out within the bound."""
    settings = settings_for(f"http://127.0.0.1:{silent_port}", connect_timeout=0.3)
    with pytest.raises(UpstreamTimeoutError, match=r"within 0\.3 s"):
        await open_control_socket(http, settings, StaticKeySource(Secret("k")))
