"""CPU the service spends per mint: a measure that stays steady on a busy machine.

Starts the emulator (no added latency) and the service exactly as ``bench_mint.py`` does,
warms up, then sends ``--mints`` mints open-loop at ``--rate`` per second (as the latency
benchmark does: CPU per request depends on the rate, since at low rates every request pays
its own wake-ups) and reports the service process's CPU time per mint (from /proc) and,
where ``perf`` may count them, its instructions per mint. Latency on a shared machine
swings with the neighbours; CPU time swings less, and instruction counts not at all.

    .venv/bin/python bench/bench_mint_cpu.py --rate 200 --mints 3000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import shutil
import subprocess
import sys
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import ProcessCpu, open_loop
from bench._stack import bench_stack, running


async def _mints(base_url: str, count: int, rate: float, users: itertools.count[int]) -> int:
    """Send ``count`` mints open-loop at ``rate``/s; return how many were not 201."""
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def send(_: int) -> bool:
            headers = {
                "content-type": "application/json",
                "x-ms-client-principal-id": f"00000000-0000-0000-0000-{next(users):012d}",
                "x-ms-client-principal-idp": "aad",
            }
            try:
                async with http.post(
                    f"{base_url}/realtime/sessions", data=b'{"agent":"elena"}', headers=headers
                ) as response:
                    await response.read()
                    return response.status == 201
            except (aiohttp.ClientError, TimeoutError):
                return False

        _, errors = await open_loop(send, total=count, rate=rate)
    return errors


def _perf(pid: int) -> subprocess.Popen[str] | None:
    """Start counting the process's instructions with ``perf stat``, if it may."""
    perf = shutil.which("perf")
    if perf is None:
        return None
    return subprocess.Popen(  # noqa: S603 - the system's perf on our own child
        [perf, "stat", "-x,", "-e", "instructions:u", "-p", str(pid)],
        stderr=subprocess.PIPE,
        text=True,
    )


def _instructions(process: subprocess.Popen[str] | None) -> int | None:
    """Stop ``perf stat`` and return the instructions it counted."""
    if process is None:
        return None
    process.send_signal(2)
    _, err = process.communicate(timeout=10)
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("instructions") and fields[0].isdigit():
            return int(fields[0])
    return None


def main() -> None:
    """Start emulator and service, measure the service's CPU per mint, stop both."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mints", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    users = itertools.count()
    with running(bench_stack(emulator_env={"EMULATOR_LATENCY_MS": "0"})) as stack:
        service = stack.service
        assert service.process  # noqa: S101 - just started
        cpu = ProcessCpu(service.process.pid)
        asyncio.run(_mints(service.base_url, 500, args.rate, users))  # warm-up
        for _ in range(args.repeat):
            before = cpu.seconds()
            perf = _perf(service.process.pid)
            errors = asyncio.run(_mints(service.base_url, args.mints, args.rate, users))
            instructions = _instructions(perf)
            after = cpu.seconds()
            used = (after - before) if after is not None and before is not None else None
            print(
                "service per mint: "
                + (f"CPU {used / args.mints * 1e6:6.0f} us" if used is not None else "")
                + (
                    f"  instructions {instructions / args.mints / 1e3:6.0f} k"
                    if instructions
                    else ""
                )
                + f"  ({args.mints} mints at {args.rate:g}/s, {errors} errors)"
            )


if __name__ == "__main__":
    main()
