"""``engram-voice dev`` (what ``make run`` starts) as a newcomer uses it: real HTTP, WebRTC."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from tests.support.realtime_client import RealtimeTestClient
from tests.support.servers import ServiceProcess, free_port, run_command


async def test_the_dev_stack_mints_a_key_that_opens_one_webrtc_call(tmp_path: Path) -> None:
    """The stack serves the page, mints with a memory grant, and the key opens one call only."""
    stack = ServiceProcess(
        ["dev"],
        env={"ENGRAM_DEV_STATE": str(tmp_path / "var")},
        ready_path="/readyz",
        log_path=tmp_path / "dev.log",
    ).start(timeout=60)
    first, second = RealtimeTestClient(), RealtimeTestClient()
    try:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=20) as http:
            page = await http.get("/")
            minted = await http.post("/realtime/sessions", json={"agent": "elena"})
            status = (await http.get("/status")).json()
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert minted.status_code == 201
        body = minted.json()
        assert body["client_secret"]["value"].startswith("ek_")
        assert body["memory"]["token"]
        assert status["memory"]["sink"]["kind"] == "zep"
        webrtc_url = httpx.URL(body["webrtc_url"])
        emulator = f"{webrtc_url.scheme}://{webrtc_url.host}:{webrtc_url.port}"
        async with httpx.AsyncClient(base_url=emulator, timeout=20) as http:
            answered = await first.call(http, body["client_secret"]["value"])
            assert answered.status_code == 201
            assert answered.text.startswith("v=0")
            refused = await second.call(http, body["client_secret"]["value"])
        assert refused.status_code in {400, 401}
    finally:
        await first.close()
        await second.close()
        assert stack.stop() in (0, -15)
    log = stack.read_log()
    assert "engram-voice is running: open http://127.0.0.1:" in log


def test_a_busy_port_is_explained_with_the_way_out() -> None:
    """When the port is taken the command says so and how to pick another, and exits 1."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_command(["dev", "--port", str(port)], {})
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert f"make run PORT={port + 1}" in result.stderr
