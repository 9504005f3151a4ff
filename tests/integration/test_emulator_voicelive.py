"""The emulator's Voice Live WebRTC control channel, over real sockets and a real peer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import httpx
import msgspec
import pytest

from engram_voice.emulator import EmulatorConfig, create_emulator_app
from engram_voice.emulator.events import VOICE_LIVE_CHANNEL_EVENTS
from tests.support.emulator_harness import TestKeys, emulator_config, wall_clock
from tests.support.polling import async_poll_until
from tests.support.servers import serve_app
from tests.support.voicelive_client import VoiceLiveTestClient, voicelive_url

PREVIEW = "2026-01-01-preview"
ELENA_VOICE = "en-US-Ava:DragonHDLatestNeural"
ELENA_SESSION: dict[str, Any] = {
    "instructions": "You are Elena, one of Engram's agents. You are warm and expressive.",
    "voice": {"type": "azure-standard", "name": ELENA_VOICE, "temperature": 0.8},
    "turn_detection": {"type": "azure_semantic_vad", "silence_duration_ms": 500},
    "input_audio_noise_reduction": {"type": "azure_deep_noise_suppression"},
    "input_audio_echo_cancellation": {"type": "server_echo_cancellation"},
    "input_audio_transcription": {"model": "azure-speech", "language": "en"},
}
GA_TRANSCRIPT_NAMES = ("response.output_audio_transcript.delta", "response.output_audio_transcript.done")


def config_for(keys: TestKeys, **changes: Any) -> EmulatorConfig:
    """Return a fast emulator configuration for ``keys`` with Voice Live ``changes``."""
    return msgspec.structs.replace(emulator_config(keys), **changes)


@pytest.fixture(name="keys")
def fixture_keys() -> TestKeys:
    """Provide fresh keys for one emulator."""
    return TestKeys()


@pytest.fixture(name="base_url")
def fixture_base_url(keys: TestKeys) -> Iterator[str]:
    """Serve a fresh emulator (turns every 0.5 s, no connection quota)."""
    app = create_emulator_app(config_for(keys), clock=wall_clock())
    with serve_app(app, ready_path="/healthz") as url:
        yield url


@pytest.fixture(name="http")
async def fixture_http() -> AsyncIterator[aiohttp.ClientSession]:
    """Provide an aiohttp session for WebSockets and the emulator's controls."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


@pytest.fixture(name="caller")
async def fixture_caller() -> AsyncIterator[VoiceLiveTestClient]:
    """Provide a Voice Live caller with a tone microphone, closed after the test."""
    client = VoiceLiveTestClient()
    yield client
    await client.close()


async def state_of(base_url: str) -> dict[str, Any]:
    """Return the emulator's ``/_emulator/state``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        answer: dict[str, Any] = (await client.get("/_emulator/state")).json()
        return answer


async def record_of(base_url: str, index: int = -1) -> dict[str, Any]:
    """Return the emulator's record of one Voice Live connection (the latest by default)."""
    record: dict[str, Any] = (await state_of(base_url))["voicelive_calls"][index]
    return record


async def test_smoke(http, keys, base_url, caller):
    """A call is set up and speaks."""
    await caller.connect(http, voicelive_url(base_url, api_version=PREVIEW, model="gpt-realtime"), {"api-key": keys.key1})
    answer = await caller.start(ELENA_SESSION)
    assert answer["type"] == "rtc.call.sdp.created", answer
    await caller.wait_connected()
    await caller.wait_for_events("response.audio_transcript.done")
    print(caller.control_types(), caller.types())
    print(await record_of(base_url))
