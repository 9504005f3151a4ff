"""``engram-voice dev`` (what ``make run`` starts) as a newcomer uses it: real HTTP, WebRTC."""

from __future__ import annotations

import os
import re
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from aiortc import RTCSessionDescription

from tests.support.polling import poll_until
from tests.support.realtime_client import RealtimeTestClient
from tests.support.servers import ServiceProcess, free_port, run_command
from tests.support.voicelive_client import VoiceLiveTestClient

ROOT = Path(__file__).resolve().parents[2]
_BOUND_S = 20.0


def leave_time_wait(port: int) -> None:
    """Leave a connection in TIME_WAIT on 127.0.0.1:``port``, as a browser tab does on Ctrl-C.

    The server side closes first (as uvicorn does on shutdown), so the TIME_WAIT socket is
    bound to ``port`` itself; then the listener goes away, so nothing listens any more.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            server_side, _ = listener.accept()
            server_side.close()  # active close: this end (port) goes to TIME_WAIT
            client.settimeout(5)
            assert client.recv(1) == b""  # the client sees the close, then closes too


def plain_bind_fails(port: int) -> bool:
    """Say whether a bind without SO_REUSEADDR (the old port check) is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def poll(condition: Callable[[], object], what: str, *, timeout: float = _BOUND_S) -> None:
    """Call ``condition`` until it returns true, or fail after ``timeout`` seconds."""
    poll_until(condition, timeout=timeout, what=what)


_BANNER_END = "Ctrl-C stops everything."


def wait_for_banner(process: ServiceProcess) -> str:
    """Return the log once dev printed its banner (it follows the service's first 200)."""
    poll(lambda: _BANNER_END in process.read_log(), "the dev stack printed no banner")
    return process.read_log()


class DevStack:
    """A running ``engram-voice dev`` and what it printed."""

    def __init__(self, process: ServiceProcess, zep_key: str) -> None:
        self.process = process
        self.zep_key = zep_key

    def zep_url(self) -> str:
        """Return the Zep stand-in's URL as the banner prints it."""
        match = re.search(r"Zep stand-in\s+(http://127\.0\.0\.1:\d+)", self.process.read_log())
        assert match, self.process.read_log()
        return match.group(1)


@pytest.fixture(name="stack", scope="module")
def fixture_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    """Start the dev stack on a port a previous run left in TIME_WAIT, with a chosen Zep key."""
    tmp = tmp_path_factory.mktemp("dev")
    port = free_port()
    leave_time_wait(port)
    assert plain_bind_fails(port), "the port must hold a TIME_WAIT socket for this test"
    zep_key = secrets.token_hex(16)
    process = ServiceProcess(
        ["dev"],
        env={"ENGRAM_DEV_STATE": str(tmp / "var"), "ZEP_STANDIN_API_KEY": zep_key},
        port=port,
        ready_path="/readyz",
        log_path=tmp / "dev.log",
    ).start(timeout=60)
    try:
        wait_for_banner(process)
        yield DevStack(process, zep_key)
    finally:
        assert process.stop() == 0  # SIGTERM, like Ctrl-C, is a clean stop of the whole stack
    assert "engram-voice dev: stopped (SIGTERM); every child has exited." in process.read_log()


async def test_the_dev_stack_mints_a_key_that_opens_one_webrtc_call(stack: DevStack) -> None:
    """The stack serves the page, mints with a memory grant, and the key opens one call only."""
    first, second = RealtimeTestClient(), RealtimeTestClient()
    try:
        async with httpx.AsyncClient(base_url=stack.process.base_url, timeout=20) as http:
            page = await http.get("/")
            minted = await http.post("/realtime/sessions", json={"agent": "elena"})
            status = (await http.get("/status")).json()
        assert page.status_code == 200
        assert "text/html" in page.headers["content-type"]
        assert minted.status_code == 201
        body = minted.json()
        assert body["client_secret"]["value"].startswith("ek_")
        assert body["memory"]["token"]
        assert status["memory"]["sink"]["kind"] == "zep-v4"
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
    assert "engram-voice is running: open http://127.0.0.1:" in stack.process.read_log()


async def test_the_dev_stack_calls_through_voice_live_by_default(stack: DevStack) -> None:
    """POST /realtime/calls in the dev stack opens a Voice Live call with the agent's voice."""
    browser = VoiceLiveTestClient()
    try:
        async with httpx.AsyncClient(base_url=stack.process.base_url, timeout=20) as http:
            created = await http.post(
                "/realtime/calls", json={"agent": "marcus", "sdp_offer": await browser.offer()}
            )
            assert created.status_code == 201, created.text
            body = created.json()
            await browser.pc.setRemoteDescription(
                RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
            )
            await browser.wait_connected()
            status = (await http.get("/status")).json()
            hung_up = await http.delete(f"/realtime/calls/{body['call_id']}")
            match = re.search(
                r"Azure emulator\s+(http://127\.0\.0\.1:\d+)", stack.process.read_log()
            )
            assert match
            state = (await http.get(f"{match.group(1)}/_emulator/state")).json()
    finally:
        await browser.close()
    assert body["upstream"] == "voice-live"
    assert body["agent"]["voice"] == "en-US-GuyNeural"
    assert status["calls"]["default_upstream"] == "voice-live"
    assert sorted(status["calls"]["upstreams"]) == ["azure-openai", "voice-live"]
    assert hung_up.status_code == 204
    assert state["voicelive_calls"][-1]["voice"]["name"] == "en-US-GuyNeural"


def _docs_snippet() -> str:
    """Return the `read_memory.py` snippet of docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    match = re.search(r"with `read_memory\.py`:\s*```python\n(.*?)```", text, re.DOTALL)
    assert match, "docs/operations.md lost its read_memory.py snippet"
    return match.group(1)


def test_the_local_memory_can_be_read_with_the_sdk_as_the_docs_show(
    stack: DevStack, tmp_path: Path
) -> None:
    """The printed key is the one set; the docs' SDK snippet reads a turn posted to enrich."""
    log = stack.process.read_log()
    assert stack.zep_key in log
    zep_url = stack.zep_url()
    base = stack.process.base_url
    minted = httpx.post(f"{base}/realtime/sessions", json={"agent": "sage"}, timeout=20).json()
    session_id, token = minted["session_id"], minted["memory"]["token"]
    text = f"I keep bees on the roof {secrets.token_hex(4)}."
    enriched = httpx.post(
        f"{base}/memory/enrich",
        json={
            "session_id": session_id,
            "messages": [{"id": "item_1", "role": "user", "text": text}],
        },
        headers={"Authorization": f"Bearer {token}"},
        timeout=20,
    )
    assert enriched.status_code == 202

    def delivered() -> bool:
        state = httpx.get(f"{zep_url}/_standin/state", timeout=5).json()
        return bool(state["counts"]["v4_messages"] >= 1)

    poll(delivered, "the turn did not reach the Zep stand-in")
    script = tmp_path / "read_memory.py"
    script.write_text(_docs_snippet())
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ZEP_")},
        "ZEP_API_URL": zep_url,
        "ZEP_API_KEY": stack.zep_key,
        "SESSION_ID": session_id,
    }
    result = subprocess.run(  # noqa: S603 - our interpreter and the docs' snippet
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"session {session_id} of user local-user" in result.stdout
    assert text in result.stdout


def test_a_child_that_exits_is_named_with_its_status_and_the_others_are_stopped(
    tmp_path: Path,
) -> None:
    """Killing the service alone: dev names it and SIGTERM, stops the others and exits 1."""
    stack = ServiceProcess(
        ["dev"],
        env={"ENGRAM_DEV_STATE": str(tmp_path / "var")},
        ready_path="/readyz",
        log_path=tmp_path / "dev.log",
    ).start(timeout=60)
    try:
        log = wait_for_banner(stack)
        pids = {
            name: int(pid)
            for name, pid in re.findall(
                r"^  (service|Azure emulator|Zep stand-in)\s.*?\(pid (\d+)", log, re.MULTILINE
            )
        }
        assert set(pids) == {"service", "Azure emulator", "Zep stand-in"}, log
        os.kill(pids["service"], signal.SIGTERM)
        assert stack.process is not None
        status = stack.process.wait(timeout=_BOUND_S)
    finally:
        stack.stop()
    assert status == 1
    log = stack.read_log()
    assert f"the service (pid {pids['service']}) exited: killed by SIGTERM (signal 15)" in log
    assert "stopping the emulator and the Zep stand-in" in log
    assert "Traceback" not in log
    for name in ("Azure emulator", "Zep stand-in"):
        poll(lambda pid=pids[name]: not _alive(pid), f"the {name} was not stopped")


def _alive(pid: int) -> bool:
    """Say whether process ``pid`` still exists (and is not a zombie)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_busy_port_is_explained_with_the_way_out() -> None:
    """When something listens on the port the command says so and how to pick another, exit 1."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_command(["dev", "--port", str(port)], {})
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
    assert f"make run PORT={port + 1}" in result.stderr


def test_a_listener_that_reuses_addresses_still_counts_as_busy() -> None:
    """A listener bound with SO_REUSEADDR (as uvicorn binds) is still a busy port."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))
        holder.listen()
        result = run_command(["dev"], {"PORT": str(port)})
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stderr
