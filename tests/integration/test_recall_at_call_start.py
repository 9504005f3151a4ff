"""Recall at call start end to end: the real service, the Azure emulator and the Zep stand-in.

After a user's turns are delivered, that user's next session carries Zep's context in the
session the emulator receives (mint, Azure OpenAI call, Voice Live call); another user's
carries none. With Zep down or slow, setups do not wait (circuit open: the reader is never
called; slow: bounded by the budget) and the session starts without memory; a call the
service holds a channel to gets the memory with ``session.update`` once the read answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engram_voice.realtime.calls import CallLimits
from engram_voice.services import Overrides
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.calls import HeaderUsers, delete_call, post_call
from tests.support.polling import async_poll_until
from tests.support.realtime_client import RealtimeTestClient
from tests.support.recall_seed import seed_v4
from tests.support.voicelive_client import VoiceLiveTestClient
from tests.support.zep_v4 import ZepV4StandIn, zep_v4_standin

OPEN_TAG = "<user_memory>"


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[ZepV4StandIn]:
    """Serve the Zep stand-in (v2 and v4 subsets) on loopback."""
    with zep_v4_standin(tmp_path) as zep:
        yield zep


def recall_env(emulator: Emulator, zep: ZepV4StandIn, api: str, **extra: str) -> dict[str, str]:
    """Return a service env with both upstreams on the emulator and Zep on the stand-in."""
    return service_env(
        emulator,
        AZURE_VOICELIVE_ENDPOINT=emulator.url,
        AZURE_VOICELIVE_KEY=emulator.keys[0],
        ZEP_API_URL=zep.base_url,
        ZEP_API_KEY=zep.api_key,
        ZEP_API=api,
        ZEP_TIMEOUT_SECONDS="3",
        MEMORY_POLL_SECONDS="0.05",
        MEMORY_CIRCUIT_FAILURES="1",
        MEMORY_CIRCUIT_COOLDOWN_SECONDS="600",
        **extra,
    )


def _overrides() -> Overrides:
    return Overrides(authenticator=HeaderUsers(), call_limits=CallLimits())


async def mint(url: str, user: str, agent: str = "elena") -> dict[str, Any]:
    """POST /realtime/sessions as ``user``; return the 201 body."""
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(
            f"{url}/realtime/sessions", json={"agent": agent}, headers={"X-Test-User": user}
        )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def minted_instructions(emulator: Emulator) -> str:
    """Return the instructions of the session the emulator minted last."""
    mints = emulator.state()["mints"]
    assert isinstance(mints, list)
    instructions: str = mints[-1]["session"]["instructions"]
    return instructions


def voicelive_record(emulator: Emulator) -> dict[str, Any]:
    """Return the emulator's record of the Voice Live control channel opened last."""
    records = emulator.state()["voicelive_calls"]
    assert isinstance(records, list)
    record: dict[str, Any] = records[-1]
    return record


async def call(url: str, user: str, upstream: str) -> str:
    """Set up a call as ``user`` on ``upstream`` (with a real offer); return its call id."""
    peer = VoiceLiveTestClient(microphone=False) if upstream == "voice-live" else None
    browser = peer or RealtimeTestClient()
    try:
        offer = await browser.offer()
    finally:
        await browser.close()
    agent = "elena" if upstream == "voice-live" else "marcus"
    response = await post_call(url, offer, agent=agent, user=user)
    assert response.status_code == 201, response.text
    call_id: str = response.json()["call_id"]
    return call_id


def recall_status(url: str) -> dict[str, Any]:
    """Return the ``recall`` section of the service's /status."""
    recall: dict[str, Any] = httpx.get(f"{url}/status", timeout=10).json()["recall"]
    return recall


async def deliver(
    url: str, zep: ZepV4StandIn, user: str, turns: list[str], *, api: str = "v2"
) -> None:
    """Talk as ``user`` (mint, then post the turns) and wait until the worker delivered them."""
    body = await mint(url, user)
    counter = "v4_messages" if api == "v4" else "messages"
    before = zep.state()["counts"][counter]
    messages = [
        {"id": f"t{i}", "role": "user" if i % 2 == 0 else "assistant", "text": text}
        for i, text in enumerate(turns)
    ]
    async with httpx.AsyncClient(timeout=20) as http:
        response = await http.post(
            f"{url}{body['memory']['enrich_url']}",
            json={"session_id": body["session_id"], "messages": messages},
            headers={"Authorization": f"Bearer {body['memory']['token']}"},
        )
    assert response.status_code == 202, response.text
    await async_poll_until(
        lambda: zep.state()["counts"][counter] >= before + len(turns),
        timeout=20,
        what=f"{user}'s turns reaching Zep",
    )


@pytest.mark.parametrize("api", ["v4", "v2"])
async def test_after_delivery_the_users_next_sessions_carry_the_memory(
    emulator: Emulator, zep: ZepV4StandIn, make_service: ServiceFactory, api: str
):
    """Alice talks, the worker delivers; her next mint and calls carry it, Bob's carry none."""
    with make_service(recall_env(emulator, zep, api), _overrides()) as url:
        await mint(url, "alice")
        assert OPEN_TAG not in minted_instructions(emulator)  # Zep knew nothing yet
        await deliver(url, zep, "alice", ["My dog is called Rex.", "What a lovely name."], api=api)
        await async_poll_until(
            lambda: recall_status(url)["outcomes"].get("refreshed", 0) >= 1,
            timeout=20,
            what="the worker refreshing Alice's memory",
        )
        await mint(url, "alice")
        instructions = minted_instructions(emulator)
        assert OPEN_TAG in instructions
        assert "My dog is called Rex." in instructions.split(OPEN_TAG, 1)[1]
        call_id = await call(url, "alice", "azure-openai")
        assert "Rex" in minted_instructions(emulator).split(OPEN_TAG, 1)[1]
        await delete_call(url, call_id, user="alice")
        call_id = await call(url, "alice", "voice-live")
        assert "Rex" in voicelive_record(emulator)["session"]["instructions"].split(OPEN_TAG)[1]
        await delete_call(url, call_id, user="alice")
        await mint(url, "bob")
        assert OPEN_TAG not in minted_instructions(emulator)
        assert "Rex" not in minted_instructions(emulator)
        call_id = await call(url, "bob", "voice-live")
        assert "Rex" not in voicelive_record(emulator)["session"]["instructions"]
        await delete_call(url, call_id, user="bob")
        assert recall_status(url)["outcomes"]["hit"] >= 3


async def test_zep_v4_context_reaches_the_session_and_no_other_users(
    emulator: Emulator, zep: ZepV4StandIn, make_service: ServiceFactory
):
    """With ZEP_API=v4 the session carries Zep Cloud's context block for the caller only."""
    await seed_v4(zep.base_url, zep.api_key, "alice", ["I am learning Portuguese."])
    await seed_v4(zep.base_url, zep.api_key, "bob", ["I play the cello."])
    with make_service(recall_env(emulator, zep, "v4"), _overrides()) as url:
        call_id = await call(url, "alice", "voice-live")
        data = voicelive_record(emulator)["session"]["instructions"].split(OPEN_TAG, 1)[1]
        assert "Portuguese" in data
        assert "cello" not in data
        await delete_call(url, call_id, user="alice")
        await mint(url, "carol")
        assert OPEN_TAG not in minted_instructions(emulator)
        assert recall_status(url)["reader"]["kind"] == "zep-v4"


async def test_with_zep_down_the_circuit_opens_and_setups_stop_reading(
    emulator: Emulator, zep: ZepV4StandIn, make_service: ServiceFactory
):
    """Zep down: one failed read opens the circuit; later setups never touch Zep; no memory."""
    await seed_v4(zep.base_url, zep.api_key, "alice", ["I am learning Portuguese."])
    zep.fault(mode="down")
    with make_service(recall_env(emulator, zep, "v4"), _overrides()) as url:
        await mint(url, "alice")
        assert OPEN_TAG not in minted_instructions(emulator)
        assert recall_status(url)["circuit"] == "open"
        calls_before = sum(zep.state()["calls"].values())
        await mint(url, "alice")
        call_id = await call(url, "alice", "voice-live")
        assert OPEN_TAG not in minted_instructions(emulator)
        assert OPEN_TAG not in voicelive_record(emulator)["session"]["instructions"]
        await delete_call(url, call_id, user="alice")
        assert sum(zep.state()["calls"].values()) == calls_before  # not read at all
        outcomes = recall_status(url)["outcomes"]
        assert (outcomes.get("error"), outcomes.get("circuit_open")) == (1, 2)


@pytest.mark.parametrize("upstream", ["voice-live", "azure-openai"])
async def test_with_zep_slow_the_setup_goes_on_and_the_call_gets_memory_late(
    emulator: Emulator, zep: ZepV4StandIn, make_service: ServiceFactory, upstream: str
):
    """Zep slow: the call starts without memory, then gets it with session.update."""
    await seed_v4(zep.base_url, zep.api_key, "alice", ["I am learning Portuguese."])
    zep.fault(latency_ms=400)  # three v4 calls: about 1.2 s, far over the 100 ms budget
    env = recall_env(emulator, zep, "v4", MEMORY_RECALL_BUDGET_MS="100")
    with make_service(env, _overrides()) as url:
        call_id = await call(url, "alice", upstream)
        if upstream == "voice-live":
            record = voicelive_record(emulator)
            assert OPEN_TAG not in record["session"]["instructions"]
        else:
            assert OPEN_TAG not in minted_instructions(emulator)
        assert recall_status(url)["outcomes"] == {"timeout": 1}
        await async_poll_until(
            lambda: recall_status(url)["outcomes"].get("late_applied") == 1,
            timeout=20,
            what="the memory applied with session.update",
        )
        if upstream == "voice-live":
            updates = voicelive_record(emulator)["session_updates"]
            assert "Portuguese" in updates[-1]["instructions"].split(OPEN_TAG, 1)[1]
        else:
            calls = emulator.state()["calls"]
            assert isinstance(calls, list)
            assert any(OPEN_TAG in (c.get("instructions") or "") for c in calls if c["active"])
        await delete_call(url, call_id, user="alice")
