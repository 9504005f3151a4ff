"""No secret ever appears in a log line or an error body."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.conftest import Emulator, service_env
from tests.support.servers import ServiceProcess


def test_no_secret_reaches_logs_or_error_bodies(emulator: Emulator, tmp_path: Path) -> None:
    """Across successes and failures, keys, ephemeral keys and tokens stay out of logs/bodies."""
    log = tmp_path / "service.log"
    caller_token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2VjcmV0LXNpZ25hdHVyZQ"
    env = service_env(
        emulator, LOG_LEVEL="debug", LOG_FORMAT="json", MEMORY_SQLITE_PATH=str(tmp_path / "q.db")
    )
    service = ServiceProcess(["serve"], env=env, log_path=log).start()
    bodies: list[str] = []
    secrets_seen = [*emulator.keys, emulator.bearer, caller_token]
    try:
        headers = {"Authorization": f"Bearer {caller_token}"}
        for _ in range(3):
            ok = httpx.post(
                f"{service.base_url}/realtime/sessions",
                json={"agent": "elena"},
                headers=headers,
                timeout=20,
            )
            assert ok.status_code == 201
            secrets_seen.append(ok.json()["client_secret"]["value"])
        emulator.fault(status=401)
        failed = httpx.post(
            f"{service.base_url}/realtime/sessions", json={"agent": "sage"}, timeout=20
        )
        assert failed.status_code == 502
        bodies.append(failed.text)
        emulator.clear()
        for bad in ({"agent": "nobody"}, {"agent": 1}, {"agent": "elena", "key": emulator.keys[0]}):
            response = httpx.post(f"{service.base_url}/realtime/sessions", json=bad, timeout=20)
            assert response.status_code in {400, 404}
            bodies.append(response.text)
        bodies.append(httpx.get(f"{service.base_url}/status", timeout=10).text)
    finally:
        service.stop()
    text = log.read_text()
    lines = [line for line in text.splitlines() if line.strip()]
    assert any("realtime.session_minted" in line for line in lines)
    for line in lines:
        json.loads(line)  # one JSON event per line in production format
    for secret in secrets_seen:
        assert secret not in text, "a secret reached the service log"
        for body in bodies:
            assert secret not in body, "a secret reached an error body or /status"
    assert Path(log).stat().st_size > 0
