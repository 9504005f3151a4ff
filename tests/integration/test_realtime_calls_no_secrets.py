"""Calls through the service log their life but never a key, an ephemeral key or a token."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import Emulator, service_env
from tests.support.calls import MINIMAL_OFFER
from tests.support.realtime_client import RealtimeTestClient
from tests.support.servers import ServiceProcess


async def test_no_secret_reaches_the_logs_or_answers_of_calls(
    emulator: Emulator, tmp_path: Path
) -> None:
    """A call set up, hung up and refused (upstream 401) leaves no secret or SDP in logs/bodies."""
    log = tmp_path / "service.log"
    env = service_env(emulator, LOG_LEVEL="debug", MEMORY_SQLITE_PATH=str(tmp_path / "q.db"))
    service = ServiceProcess(["serve"], env=env, log_path=log).start()
    browser = RealtimeTestClient()
    bodies: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=service.base_url, timeout=20) as http:
            created = await http.post(
                "/realtime/calls", json={"agent": "marcus", "sdp_offer": await browser.offer()}
            )
            assert created.status_code == 201, created.text
            bodies.append(created.text)
            hung_up = await http.delete(f"/realtime/calls/{created.json()['call_id']}")
            assert hung_up.status_code == 204
            emulator.fault(target="calls", status=401)
            refused = await http.post(
                "/realtime/calls", json={"agent": "sage", "sdp_offer": MINIMAL_OFFER}
            )
            assert refused.status_code == 502
            bodies.extend([refused.text, (await http.get("/status")).text])
    finally:
        await browser.close()
        service.stop()
    text = log.read_text()
    events = [json.loads(line)["event"] for line in text.splitlines() if line.strip()]
    assert "realtime.call_started" in events
    assert "realtime.call_ended" in events
    assert "a=fingerprint" not in text, "an SDP reached the service log"
    secrets = [*emulator.keys, emulator.bearer, created.json()["memory"]["token"], "ek_"]
    for secret in secrets:
        assert secret not in text, "a secret reached the service log"
        for body in bodies[1:]:
            assert secret not in body, "a secret reached an error body or /status"
    for secret in [*secrets[:2], "ek_"]:
        assert secret not in bodies[0]
