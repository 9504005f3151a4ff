"""kill -9 of the service mid-call loses no turn that was captured and acknowledged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCSessionDescription

from tests.conftest import Emulator, service_env
from tests.integration.test_memory_enrich_http import ZEP_KEY, Zep
from tests.integration.test_realtime_calls_capture import heard_turns
from tests.support.memory_service import memory_service
from tests.support.polling import async_poll_until
from tests.support.realtime_client import RealtimeTestClient


def queue_depth(url: str) -> int:
    """Return the service's queue depth from /status."""
    depth: Any = httpx.get(f"{url}/status", timeout=10).json()["memory"]["queue"]["depth"]
    return int(depth or 0)


def capture_ready(url: str) -> bool:
    """Return whether the service's capture process is up and taking calls (/status)."""
    capture: Any = httpx.get(f"{url}/status", timeout=10).json()["calls"]["capture"]
    return bool(capture.get("ready"))


async def warm_up(http: httpx.AsyncClient, url: str) -> None:
    """Open and hang up one call, then wait until the capture process takes calls."""
    browser = RealtimeTestClient()
    try:
        created = await http.post(
            "/realtime/calls", json={"agent": "elena", "sdp_offer": await browser.offer()}
        )
        assert created.status_code == 201, created.text
        ended = await http.delete(f"/realtime/calls/{created.json()['call_id']}")
        assert ended.status_code == 204
    finally:
        await browser.close()
    await async_poll_until(lambda: capture_ready(url), timeout=30, what="capture process ready")


@pytest.mark.parametrize("held_by", ["service", "capture_process"])
async def test_kill_9_mid_call_loses_no_captured_turn(
    emulator: Emulator, tmp_path: Path, held_by: str
) -> None:
    """Turns queued from the sideband before a SIGKILL reach Zep after restart, each once.

    The call's sideband is held by the service itself (its first call, while the capture
    process starts) or by the capture process (a later call).
    """
    zep = Zep(tmp_path)  # not started yet: nothing can be delivered before the kill
    zep.api = "v4"
    env = service_env(
        emulator,
        ZEP_API="v4",
        ZEP_API_URL=zep.url,
        ZEP_API_KEY=ZEP_KEY,
        ZEP_TIMEOUT_SECONDS="1",
        MEMORY_POLL_SECONDS="0.1",
        MEMORY_LEASE_SECONDS="2",
        MEMORY_BACKOFF_BASE_SECONDS="0.2",
        MEMORY_BACKOFF_MAX_SECONDS="0.5",
        MEMORY_CIRCUIT_COOLDOWN_SECONDS="0.5",
        MEMORY_SQLITE_PATH=str(tmp_path / "queue.sqlite3"),
    )
    service = memory_service(env, tmp_path / "service-1.log").start()
    restarted = None
    browser = RealtimeTestClient()
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=20) as http:
            if held_by == "capture_process":
                await warm_up(http, service.base_url)
            created = await http.post(
                "/realtime/calls", json={"agent": "elena", "sdp_offer": await browser.offer()}
            )
            assert created.status_code == 201, created.text
            body = created.json()
            await browser.pc.setRemoteDescription(
                RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
            )
            await async_poll_until(
                lambda: queue_depth(service.base_url) >= 4, timeout=30, what="four queued turns"
            )
        acknowledged = queue_depth(service.base_url)
        service.kill()
        expected = [text for _, _, text in heard_turns(browser)][:acknowledged]
        await browser.close()
        zep.process.start()
        restarted = memory_service(env, tmp_path / "service-2.log").start()

        async def delivered() -> list[str] | None:
            contents = await zep.contents(body["session_id"])
            return contents if len(contents) >= acknowledged else None

        contents = await async_poll_until(delivered, timeout=30, what="delivery after restart")
    finally:
        await browser.close()
        service.stop()
        if restarted is not None:
            restarted.stop()
        zep.process.stop()
    assert contents is not None
    assert contents[: len(expected)] == expected
    assert len(set(contents)) == len(contents)
