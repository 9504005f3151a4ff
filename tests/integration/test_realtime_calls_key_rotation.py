"""A key rotated in Key Vault while calls are live: hang-ups and new calls keep working."""

from __future__ import annotations

import dataclasses

from aiortc import RTCSessionDescription

from tests.conftest import Emulator, ServiceFactory
from tests.support.calls import (
    HeaderUsers,
    delete_call,
    emulator_call,
    emulator_call_ids,
    post_call,
)
from tests.support.key_rotation import NAME, key_vault_service, regenerate
from tests.support.keyvault import KeyVaultStandIn
from tests.support.realtime_client import RealtimeTestClient


async def _open(url: str, emulator: Emulator, browser: RealtimeTestClient) -> tuple[str, str]:
    before = emulator_call_ids(emulator)
    response = await post_call(url, await browser.offer())
    assert response.status_code == 201, response.text
    body = response.json()
    await browser.pc.setRemoteDescription(
        RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
    )
    (upstream_id,) = emulator_call_ids(emulator) - before
    return body["call_id"], upstream_id


async def test_a_call_opened_before_a_rotation_is_hung_up_with_the_new_key(
    vault: KeyVaultStandIn, own_emulator: Emulator, make_service: ServiceFactory
) -> None:
    """The hang-up's 401 with the retired key re-reads Key Vault once and succeeds."""
    env, overrides = key_vault_service(vault, own_emulator, refresh_seconds=3600)
    overrides = dataclasses.replace(overrides, authenticator=HeaderUsers())
    first, second = RealtimeTestClient(), RealtimeTestClient()
    try:
        with make_service(env, overrides) as url:
            call_id, upstream_id = await _open(url, own_emulator, first)
            vault.set_secret(NAME, regenerate(own_emulator, 1))  # key 1 retired and replaced
            hung_up = await delete_call(url, call_id)
            recorded = emulator_call(own_emulator, upstream_id)
            _, later_id = await _open(url, own_emulator, second)
            later = emulator_call(own_emulator, later_id)
    finally:
        await first.close()
        await second.close()
    assert hung_up.status_code == 204
    assert (recorded["active"], recorded["end_reason"]) == (False, "hangup")
    assert later["active"] is True
