"""Time from spawning ``engram-voice serve`` to its first 200 on /healthz (loopback only).

    python bench/bench_startup.py [VENV] [RUNS]

VENV defaults to .venv. Run it with the machine's own PYTHONDONTWRITEBYTECODE setting: the
number shows whether the virtualenv carries compiled bytecode (make install compiles it).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

_TIMEOUT_S = 60.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_200(venv: Path, workdir: Path) -> float:
    """Start the service once and return the seconds until /healthz answered 200."""
    port = _free_port()
    env = {
        **os.environ,
        "APP_ENV": "local",
        "AUTH_MODE": "none",
        "PORT": str(port),
        "LOG_LEVEL": "warning",
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "k" * 32,
        "MEMORY_TOKEN_KEYS": "k1:" + "a" * 64,
        "MEMORY_SQLITE_PATH": str(workdir / f"queue-{port}.sqlite3"),
    }
    started = time.monotonic()
    process = subprocess.Popen(  # noqa: S603 - the virtualenv's own entry point
        [str(venv / "bin" / "engram-voice"), "serve"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        while time.monotonic() - started < _TIMEOUT_S:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - started
            except OSError:
                time.sleep(0.01)
        raise TimeoutError(f"no 200 from /healthz within {_TIMEOUT_S:g}s")
    finally:
        process.terminate()
        process.wait(timeout=20)


def main() -> None:
    """Print each run's time to the first 200 and the median."""
    venv = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv").resolve()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as workdir:
        times = [_first_200(venv, Path(workdir)) for _ in range(runs)]
    print(f"time to first 200 of `engram-voice serve` ({venv}):")
    print(
        "  runs "
        + " ".join(f"{t:.2f}" for t in times)
        + f"  median {statistics.median(times):.2f} s"
    )


if __name__ == "__main__":
    main()
