"""A stop signalled to the service's process group drains calls through the capture process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
from aiortc import RTCSessionDescription

from tests.conftest import Emulator, service_env
from tests.integration.test_memory_enrich_http import ZEP_KEY, Zep
from tests.integration.test_realtime_capture_kill import queue_depth, warm_up
from tests.support.memory_service import memory_service
from tests.support.polling import async_poll_until, poll_until
from tests.support.realtime_client import RealtimeTestClient


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _call_in_capture_process(url: str, browser: RealtimeTestClient) -> int:
    """Open a call the capture process holds, wait for two captured turns; return its pid."""
    async with httpx.AsyncClient(base_url=url, timeout=20) as http:
        await warm_up(http, url)
        status: Any = (await http.get("/status")).json()["calls"]["capture"]
        pid = status["pid"]
        assert isinstance(pid, int)
        created = await http.post(
            "/realtime/calls", json={"agent": "elena", "sdp_offer": await browser.offer()}
        )
        assert created.status_code == 201, created.text
        await browser.pc.setRemoteDescription(
            RTCSessionDescription(sdp=created.json()["sdp_answer"], type="answer")
        )
        await async_poll_until(lambda: queue_depth(url) >= 2, timeout=30, what="turns")
    return pid


async def test_sigterm_to_the_group_hangs_up_through_the_capture_process_which_then_exits(
    emulator: Emulator, tmp_path: Path
) -> None:
    """SIGTERM to the group (Ctrl-C, a supervisor): calls drained, no capture loss, no orphan."""
    log = tmp_path / "service.log"
    zep = Zep(tmp_path)  # never started: the turns stay queued
    env = service_env(
        emulator,
        ZEP_API="v4",
        ZEP_API_URL=zep.url,
        ZEP_API_KEY=ZEP_KEY,
        MEMORY_SQLITE_PATH=str(tmp_path / "queue.sqlite3"),
    )
    service = memory_service(env, log).start()
    browser = RealtimeTestClient()
    try:
        pid = await _call_in_capture_process(service.base_url, browser)
        service.stop()  # SIGTERM to the whole process group (the capture process too)
    finally:
        await browser.close()
        service.stop()
    poll_until(lambda: not _alive(pid), timeout=15, what="capture process gone")
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    names = [event["event"] for event in events]
    assert "realtime.capture_process_exited" not in names  # it outlived the signal
    assert "realtime.sideband_lost" not in names
    assert "realtime.capture_close_failed" not in names
    assert "realtime.capture_process_stopped" in names  # closed by the service, at the end
    ended = [e for e in events if e["event"] == "realtime.call_ended"]
    assert ended


async def test_the_capture_process_exits_when_the_service_alone_is_killed_mid_call(
    emulator: Emulator, tmp_path: Path
) -> None:
    """SIGKILL of the service process only (the OOM killer): its capture process is no orphan."""
    zep = Zep(tmp_path)
    env = service_env(
        emulator,
        ZEP_API="v4",
        ZEP_API_URL=zep.url,
        ZEP_API_KEY=ZEP_KEY,
        MEMORY_SQLITE_PATH=str(tmp_path / "queue.sqlite3"),
    )
    service = memory_service(env, tmp_path / "service.log").start()
    browser = RealtimeTestClient()
    try:
        pid = await _call_in_capture_process(service.base_url, browser)
        assert service.process is not None
        os.kill(service.process.pid, signal.SIGKILL)  # the service only, not its group
        service.process.wait(timeout=10)
        poll_until(lambda: not _alive(pid), timeout=20, what="capture process gone")
    finally:
        await browser.close()
        service.stop()
