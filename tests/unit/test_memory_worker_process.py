"""The worker process's own endpoints: health follows the delivery loop, status, metrics."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import TestClient

from engram_voice.envreader import EnvReader
from engram_voice.memory import MemorySettings
from engram_voice.memory.cli import create_worker_app
from tests.support.polling import poll_until


def _settings(tmp: Path) -> MemorySettings:
    reader = EnvReader(
        {
            "MEMORY_SQLITE_PATH": str(tmp / "queue.sqlite3"),
            "ZEP_API_URL": "http://127.0.0.1:9",
            "ZEP_API_KEY": "never-sent",
            "MEMORY_POLL_SECONDS": "0.05",
        }
    )
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def test_worker_health_is_ok_while_delivery_runs_and_503_once_it_ended(tmp_path):
    """/healthz is 200 while the delivery loop runs and 503 once it ended (so it is restarted)."""
    with TestClient(create_worker_app(_settings(tmp_path))) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        status = client.get("/status").json()
        assert status["service"] == "engram-voice-worker"
        assert status["memory"]["worker"]["running"] is True
        assert "engram_memory_queue_depth" in client.get("/metrics").text
        runtime = client.app.state.memory
        runtime.worker.request_stop()
        poll_until(lambda: not runtime.worker_running, what="the delivery loop ending")
        answer = client.get("/healthz")
        assert (answer.status_code, answer.json()) == (503, {"status": "worker stopped"})
