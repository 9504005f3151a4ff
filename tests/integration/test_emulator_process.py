import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import httpx
import pytest

from tests.support.emulator_harness import TestKeys
from tests.support.realtime_client import RealtimeTestClient, mint_body
from tests.support.servers import ServiceProcess
from tests.support.voicelive_client import VoiceLiveTestClient, voicelive_url

MINT = "/openai/v1/realtime/client_secrets"


@pytest.fixture(name="keys")
def fixture_keys() -> TestKeys:
    """Provide fresh keys for the emulator process."""
    return TestKeys()


@pytest.fixture(name="process")
def fixture_process(keys: TestKeys, tmp_path: Path) -> Iterator[ServiceProcess]:
    """Run ``engram-voice emulator`` as its own process on a loopback port."""
    process = ServiceProcess(
        ["emulator"],
        env={
            "EMULATOR_API_KEYS": f"{keys.key1},{keys.key2}",
            "EMULATOR_BEARER_TOKENS": keys.bearer,
            "EMULATOR_TURN_INTERVAL_SECONDS": "0.5",
            "EMULATOR_MAX_TURNS": "2",
        },
        log_path=tmp_path / "emulator.log",
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


async def test_the_process_serves_calls_and_controls_and_stops_cleanly(process, keys):
    """Over HTTP only: faults, key rotation, a real call; SIGTERM then shuts it down gracefully."""
    secrets_seen = [keys.key1, keys.key2, keys.bearer]
    caller = RealtimeTestClient()
    try:
        async with httpx.AsyncClient(base_url=process.base_url, timeout=20) as http:
            await http.post("/_emulator/faults", json={"status": 500, "count": 1})
            failed = await http.post(MINT, headers={"api-key": keys.key1}, json=mint_body())
            new_key = (await http.post("/_emulator/keys/1/regenerate")).json()["key"]
            minted = await http.post(MINT, headers={"api-key": new_key}, json=mint_body())
            ephemeral = minted.json()["value"]
            answer = await caller.call(http, ephemeral)
            await caller.wait_for_events("response.output_audio_transcript.done")
            state = (await http.get("/_emulator/state")).json()
        secrets_seen += [new_key, ephemeral]
        status = process.stop()
    finally:
        await caller.close()

    assert failed.status_code == 500
    assert minted.status_code == 200
    assert answer.status_code == 201
    assert [m["auth"] for m in state["mints"]] == ["key1", "key1"]
    assert state["active_calls"] == 1
    # uvicorn re-raises the SIGTERM it caught once its graceful shutdown is complete (a kill
    # after the stop timeout would be -SIGKILL); the lifespan closed the open call first.
    assert status == -signal.SIGTERM
    log = process.read_log()
    assert "emulator.calls_closed" in log
    assert "reason=emulator_shutdown" in log
    for secret in secrets_seen:
        assert secret not in log


async def test_the_process_serves_voice_live_calls_without_logging_the_key(process, keys):
    """A Voice Live call with the key in the query speaks; shutdown ends it; no key is logged."""
    caller = VoiceLiveTestClient()
    url = voicelive_url(
        process.base_url, api_version="2026-01-01-preview", model="gpt-realtime", api_key=keys.key2
    )
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await caller.connect(http, url)
            answer = await caller.start(
                {"voice": {"type": "azure-standard", "name": "en-US-GuyNeural"}}
            )
            await caller.wait_for_events("response.audio_transcript.done")
            async with httpx.AsyncClient(base_url=process.base_url, timeout=20) as client:
                state = (await client.get("/_emulator/state")).json()
            process.stop()
            code = await caller.wait_closed()
    finally:
        await caller.close()

    assert answer["type"] == "rtc.call.sdp.created"
    assert state["voicelive_calls"][0]["auth"] == "key2"
    assert state["voicelive_calls"][0]["peer"]["voice"] == "en-US-GuyNeural"
    assert code is not None
    log = process.read_log()
    assert "emulator.voicelive_ended" in log
    for secret in (keys.key1, keys.key2, keys.bearer):
        assert secret not in log


def test_start_up_fails_without_the_two_keys(tmp_path):
    """Without EMULATOR_API_KEYS the command stops at once with status 2 naming the variable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMULATOR_")}

    result = subprocess.run(
        [sys.executable, "-m", "engram_voice", "emulator"],
        env={**env, "HOST": "127.0.0.1", "PORT": "9"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    assert result.returncode == 2
    assert "EMULATOR_API_KEYS" in result.stderr
