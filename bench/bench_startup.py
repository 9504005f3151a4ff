"""Start-up cost of the service and of its capture process (loopback only).

    python bench/bench_startup.py [VENV] [RUNS]

Prints, median of RUNS (default 5):

* ``engram-voice serve``: seconds from spawn to its first 200 on /healthz (wall) and the CPU
  seconds (user + system, from /proc/PID/stat) the process had used by then;
* the capture process (``python -m engram_voice.realtime.calls.capture_child --help``, which
  imports everything the process runs and exits): wall and CPU seconds.

CPU seconds are the number to compare on a shared machine; wall seconds depend on the
neighbours. VENV defaults to .venv. Run it with the machine's own PYTHONDONTWRITEBYTECODE
setting: the number shows whether the virtualenv carries compiled bytecode (make install
compiles it).
"""

from __future__ import annotations

import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

_TIMEOUT_S = 60.0
_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cpu_seconds(pid: int) -> float:
    """Return the user + system CPU seconds process ``pid`` has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def _first_200(venv: Path, workdir: Path) -> tuple[float, float]:
    """Start the service once; return (wall, CPU) seconds until /healthz answered 200."""
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
                        return time.monotonic() - started, _cpu_seconds(process.pid)
            except OSError:
                time.sleep(0.01)
        raise TimeoutError(f"no 200 from /healthz within {_TIMEOUT_S:g}s")
    finally:
        process.terminate()
        process.wait(timeout=20)


def _capture_start(venv: Path) -> tuple[float, float]:
    """Run the capture process's ``--help`` once; return its (wall, CPU) seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run(  # noqa: S603 - the virtualenv's own interpreter
        [str(venv / "bin" / "python"), "-m", "engram_voice.realtime.calls.capture_child", "--help"],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=_TIMEOUT_S,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu


def _line(what: str, samples: list[tuple[float, float]]) -> str:
    walls = [wall for wall, _ in samples]
    cpus = [cpu for _, cpu in samples]
    return (
        f"  {what}: wall runs {' '.join(f'{t:.2f}' for t in walls)}"
        f"  median {statistics.median(walls):.2f} s\n"
        f"  {' ' * len(what)}  CPU  runs {' '.join(f'{t:.2f}' for t in cpus)}"
        f"  median {statistics.median(cpus):.3f} s"
    )


def main() -> None:
    """Print each run's wall and CPU seconds and their medians."""
    venv = Path(sys.argv[1] if len(sys.argv) > 1 else ".venv").resolve()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory() as workdir:
        serve = [_first_200(venv, Path(workdir)) for _ in range(runs)]
    capture = [_capture_start(venv) for _ in range(runs)]
    print(f"start-up ({venv}, {runs} runs, CPU = user + system of the process):")
    print(_line("`engram-voice serve` to first 200 on /healthz", serve))
    print(_line("capture process (capture_child --help)", capture))


if __name__ == "__main__":
    main()
