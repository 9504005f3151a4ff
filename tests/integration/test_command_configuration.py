"""Every ``engram-voice`` command checks its configuration the same way, and logs the same way.

Habit 14 of STYLE.md: each command loads its settings through one checked path and fails
with one message naming the variable and exit status 2, never a traceback and never a
crash later at start-up; and each one logs through the same LOG_FORMAT/LOG_LEVEL pipeline.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import ServiceProcess, free_port, run_command

EXIT_INVALID_CONFIGURATION = 2

_GOOD_AGENTS = (
    '[defaults.transcription]\nmodel = "m"\n[defaults.turn_detection]\ntype = "server_vad"\n'
)


def _valid_env(command: str, tmp_path: Path) -> dict[str, str]:
    """Return an environment in which ``command`` would start (so only the bad setting fails)."""
    queue = str(tmp_path / "queue.sqlite3")
    zep = {"ZEP_API_URL": f"http://127.0.0.1:{free_port()}", "ZEP_API_KEY": "z" * 32}
    realtime = {"AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9", "AZURE_OPENAI_API_KEY": "k" * 32}
    envs: dict[str, dict[str, str]] = {
        "serve": {
            **realtime,
            "AUTH_MODE": "none",
            "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
            "MEMORY_SQLITE_PATH": queue,
        },
        "worker": {**zep, "MEMORY_SQLITE_PATH": queue},
        "emulator": {"EMULATOR_API_KEYS": f"{secrets.token_hex(16)},{secrets.token_hex(16)}"},
        "zep-standin": {
            "ZEP_STANDIN_API_KEY": "z" * 32,
            "ZEP_STANDIN_DB": str(tmp_path / "zep.sqlite3"),
        },
        "check": realtime,
        "dev": {"ENGRAM_DEV_STATE": str(tmp_path / "var")},
        "memory dead-letters list": {"MEMORY_SQLITE_PATH": queue},
    }
    return {"PORT": str(free_port()), **envs[command]}


def _agents_file(tmp_path: Path, body: str | None) -> str:
    """Write an agents file with ``body`` (None: return a path that does not exist)."""
    path = tmp_path / "agents.toml"
    if body is None:
        return str(tmp_path / "missing" / "agents.toml")
    path.write_text(body)
    return str(path)


_COMMANDS = (
    "serve",
    "worker",
    "emulator",
    "zep-standin",
    "check",
    "dev",
    "memory dead-letters list",
)
_AGENT_COMMANDS = ("serve", "check", "dev")
"""The commands that load the agent catalog (the service, its check, and the dev stack)."""

_BAD_SETTINGS: dict[str, tuple[str, str]] = {
    "log-level": ("LOG_LEVEL", "verbose"),
    "log-format": ("LOG_FORMAT", "xml"),
    "port": ("PORT", "eighty"),
}
"""One bad value per shared setting; the reader's own tests cover each kind of bad value."""
_BAD_AGENTS: dict[str, str | None] = {
    "agents-missing-file": None,
    "agents-bad-toml": "[agents.a\nname = ",
    "agents-unknown-voice": _GOOD_AGENTS
    + '[agents.a]\nname="A"\nvoice="robot"\ninstructions="x"\n',
}

_CASES = [
    pytest.param(command, case, id=f"{command}-{case}")
    for command in _COMMANDS
    for case in (*_BAD_SETTINGS, *(_BAD_AGENTS if command in _AGENT_COMMANDS else ()))
]


@pytest.mark.parametrize(("command", "case"), _CASES)
def test_every_command_refuses_bad_settings_with_one_message_and_exit_2(
    command: str, case: str, tmp_path: Path
) -> None:
    """A bad setting stops any command at once: exit 2, one message naming it, no traceback."""
    env = _valid_env(command, tmp_path)
    if case in _BAD_SETTINGS:
        name, value = _BAD_SETTINGS[case]
        env[name] = value
    else:
        name = "AGENTS_FILE"
        env[name] = _agents_file(tmp_path, _BAD_AGENTS[case])
    result = run_command(command.split(), env, timeout=25)
    assert result.returncode == EXIT_INVALID_CONFIGURATION, result.stderr
    assert result.stderr.startswith("engram-voice: invalid configuration:\n"), result.stderr
    assert name in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("engram-voice:") == 1
    assert result.stdout == ""


def test_the_separate_worker_logs_one_json_event_per_line_in_production(tmp_path: Path) -> None:
    """`engram-voice worker` in production mode writes only JSON lines, uvicorn's events too."""
    log = tmp_path / "worker.log"
    worker = ServiceProcess(
        ["worker"],
        env={
            "APP_ENV": "production",
            "ZEP_API_URL": f"http://127.0.0.1:{free_port()}",
            "ZEP_API_KEY": "z" * 32,
            "MEMORY_SQLITE_PATH": str(tmp_path / "queue.sqlite3"),
        },
        log_path=log,
    ).start()
    assert worker.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a graceful stop
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    events = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    names = {event["event"] for event in events}
    assert {"memory.worker_listening", "memory.worker_started"} <= names
    assert any(event.get("logger") == "uvicorn.error" for event in events)
    assert all({"event", "level", "timestamp"} <= set(event) for event in events)


def test_the_emulator_without_its_optional_dependencies_says_how_to_install_them() -> None:
    """`engram-voice emulator` on a production install (no aiortc) exits 2 with one hint."""
    script = (
        "import sys\n"
        "sys.modules['aiortc'] = None  # as if the 'emulator' extra were not installed\n"
        "from engram_voice.cli import main\n"
        "raise SystemExit(main(['emulator']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMULATOR_")}
    result = subprocess.run(  # noqa: S603 - our interpreter
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == EXIT_INVALID_CONFIGURATION, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert "pip install 'engram-voice[emulator]'" in result.stderr
