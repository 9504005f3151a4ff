"""How long a stalled capture process keeps its calls before they fall back to the browser.

Holds one call's sideband in the capture process (a loopback Azure OpenAI), stops the
process (SIGSTOP) and measures until the call's sideband reads ``lost`` (the service's
watchdog killed it: ``STALL_SECONDS``), then how long the call's hang-up takes after that.
Wall-clock by nature (it measures a timeout), but dominated by the bound, not by CPU.

    .venv/bin/python bench/bench_capture_stall.py [--stall-seconds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.capture_hosts import (
    Host,
    RotatingKeys,
    bound,
    memory_runtime,
    process_pid,
    serve_upstream,
)
from tests.support.polling import async_poll_until

from engram_voice.realtime.calls import capture_process


async def _measure(stall_seconds: float) -> None:
    capture_process.STALL_SECONDS = stall_seconds
    with tempfile.TemporaryDirectory() as tmp:
        async with serve_upstream() as upstream, memory_runtime(Path(tmp)) as runtime:
            host = Host("process", RotatingKeys())
            try:
                call = await host.open(upstream.url)
                await bound(runtime, call)
                sideband = call.sideband
                assert sideband is not None  # noqa: S101 - a bench's precondition
                os.kill(process_pid(host), signal.SIGSTOP)
                stopped = time.monotonic()
                await async_poll_until(
                    lambda: sideband.state == "lost", timeout=stall_seconds * 4, what="lost"
                )
                lost = time.monotonic()
                await call.hangup("client_hangup")
                done = time.monotonic()
                assert host.process is not None  # noqa: S101
                print(f"stall bound (STALL_SECONDS): {stall_seconds:.1f} s")
                print(f"SIGSTOP -> sideband lost: {lost - stopped:.1f} s")
                print(f"hang-up after that: {done - lost:.2f} s")
                print(f"/status calls.capture: {host.process.describe()}")
            finally:
                await host.close()


def main() -> int:
    """Run the measurement once and print it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stall-seconds", type=float, default=capture_process.STALL_SECONDS)
    args = parser.parse_args()
    asyncio.run(_measure(args.stall_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
