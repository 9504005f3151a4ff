"""The capture process imports only what it runs, so it is ready while calls still wait."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.process  # starts an interpreter (no shared helper to mark it)

CAPTURE_CHILD = "engram_voice.realtime.calls.capture_child"

# What the capture process runs: the capture, the sideband, the wire, their schemas,
# credentials, endpoints, logs and metrics (and the packages that hold them).
ALLOWED_OWN_MODULES = frozenset(
    {
        "engram_voice",
        "engram_voice.lazy",
        "engram_voice.errors",
        "engram_voice.logs",
        "engram_voice.credentials",
        "engram_voice.credentials.secret",
        "engram_voice.credentials.sources",
        "engram_voice.memory",
        "engram_voice.memory.schemas",
        "engram_voice.realtime",
        "engram_voice.realtime.endpoints",
        "engram_voice.realtime.calls",
        "engram_voice.realtime.calls.capture",
        "engram_voice.realtime.calls.capture_child",
        "engram_voice.realtime.calls.capture_wire",
        "engram_voice.realtime.calls.capture_priority",
        "engram_voice.realtime.calls.metrics",
        "engram_voice.realtime.calls.sideband",
    }
)

# Installed distributions the service uses and the capture process must not load.
FORBIDDEN_PACKAGES = (
    "litestar",
    "uvicorn",
    "httpx",
    "click",
    "rich",
    "pygments",
    "azure",
    "zep_python",
    "zep_cloud",
    "jwt",
    "cryptography",
    "stamina",
    "limits",
    "psycopg",
    "psycopg_pool",
    "sqlite3",
)

_PROBE = textwrap.dedent(
    f"""
    import json, sys
    import {CAPTURE_CHILD}
    print(json.dumps(sorted(n for n, m in sys.modules.items() if m is not None)))
    """
)


@pytest.fixture(name="loaded", scope="module")
def _loaded() -> frozenset[str]:
    """Return the modules a fresh interpreter holds after importing the capture process."""
    done = subprocess.run(  # noqa: S603 - our own interpreter and package
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return frozenset(json.loads(done.stdout))


@pytest.mark.parametrize("package", FORBIDDEN_PACKAGES)
def test_the_capture_process_does_not_import_the_service_stack(
    loaded: frozenset[str], package: str
) -> None:
    """Importing the capture process loads neither the package nor any of its submodules."""
    assert sorted(n for n in loaded if n == package or n.startswith(f"{package}.")) == []


def test_the_capture_process_imports_only_the_modules_it_runs(loaded: frozenset[str]) -> None:
    """Of engram_voice, only the capture, sideband, wire and their few helpers are loaded."""
    own = {n for n in loaded if n == "engram_voice" or n.startswith("engram_voice.")}
    assert sorted(own - ALLOWED_OWN_MODULES) == []
    assert CAPTURE_CHILD in own


def test_the_capture_process_still_loads_what_it_needs(loaded: frozenset[str]) -> None:
    """The probe is real: the capture process's own libraries are in the loaded set."""
    assert {"aiohttp", "msgspec", "structlog", "prometheus_client"} <= loaded
