"""Where the capture bench's processes run, and what the scheduler and the probe saw.

On a shared machine the measured processes compete with neighbours for the cores:
:func:`isolate` pins them and/or raises their priority (``--pin``, ``--nice``),
:func:`run_queue_ms` reads how long the service's event loop waited for a CPU,
:func:`loop_thread_cpu` the CPU of that thread alone, and :func:`probe_summary` prints
``bench._probe``'s loop lag and GC pauses per phase.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from bench._stack import BenchStack

__all__ = ["isolate", "loop_thread_cpu", "place", "probe_summary", "run_queue_ms"]


def run_queue_ms(pid: int) -> float | None:
    """Return the ms the process's main thread (its event loop) has waited for a CPU so far.

    The second field of ``/proc/<pid>/task/<pid>/schedstat``: time runnable but not
    running, i.e. taken by other processes (the emulator, this client, the neighbours).
    """
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()
    except OSError:
        return None
    return int(fields[1]) / 1e6


def loop_thread_cpu(pid: int) -> float | None:
    """Return the CPU seconds of the process's main thread (its event loop) so far."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def probe_summary(
    report: Path, windows: dict[str, tuple[float, float]], who: str = "service"
) -> None:
    """Print ``who``'s loop lag and GC pauses (``bench._probe``) in each phase's window."""
    try:
        lines = [json.loads(line) for line in report.read_text().splitlines() if line]
    except OSError:
        return
    print(f"{who} event loop (bench._probe, per second: lag of a 5 ms timer; GC pauses):")
    for line in lines:
        if "census" in line:
            print(
                f"  {line['tracked']:,} GC-tracked objects with the calls held; by type: "
                + ", ".join(f"{name} {count:,}" for name, count in line["census"][:25])
            )
    lines = [line for line in lines if "census" not in line]
    for name, (start, end) in windows.items():
        seconds = [line for line in lines if start <= line["t"] < end - 1]
        if not seconds:
            continue
        p99s = sorted(line["lag_p99_ms"] for line in seconds)
        worst = max(line["lag_max_ms"] for line in seconds)
        gcs = []
        for gen in ("0", "1", "2"):
            counts = [line["gc"].get(gen, [0, 0.0, 0.0, 0.0]) for line in seconds]
            n, total = sum(c[0] for c in counts), sum(c[1] for c in counts)
            gcs.append(
                f"gen{gen} {n / len(seconds):.1f}/s {total / len(seconds):.2f} ms/s, longest "
                f"{max(c[2] for c in counts):.1f} ms ({max(c[3] for c in counts):.1f} ms CPU)"
            )
        print(
            f"  {name:<20} lag p99 median {p99s[len(p99s) // 2]:.2f} ms, worst second "
            f"{p99s[-1]:.2f} ms, max {worst:.1f} ms"
        )
        print("    " + "; ".join(gcs))


def place(pid: int, *, cpus: set[int] | None, nice: int | None) -> None:
    """Pin every thread of ``pid`` (0: this thread) to ``cpus`` and/or set its nice value.

    Threads started later inherit both from the thread that starts them. Where the kernel
    groups processes by session (``sched_autogroup``; the stack's processes each start
    one), a thread's nice value only ranks it within its group, so the group's nice
    (``/proc/<pid>/autogroup``) is set as well.
    """
    tids = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir()] if pid else [0]
    for tid in tids:
        if cpus is not None:
            os.sched_setaffinity(tid, cpus)
        if nice is not None:
            os.setpriority(os.PRIO_PROCESS, tid, nice)
    autogroup = Path(f"/proc/{pid or os.getpid()}/autogroup")
    if nice is not None and autogroup.exists():
        autogroup.write_text(str(nice))


def isolate(stack: BenchStack, args: argparse.Namespace) -> None:
    """Apply ``--pin`` and ``--nice`` to the service, the emulator and this client."""
    assert stack.service.process  # noqa: S101 - started
    assert stack.emulator.process  # noqa: S101
    nice = args.nice
    two_cores = len(os.sched_getaffinity(0)) >= 2
    pinned = ({0}, {1}, {1}) if args.pin and two_cores else (None, None, None)
    try:
        place(stack.service.process.pid, cpus=pinned[0], nice=nice)
        place(stack.emulator.process.pid, cpus=pinned[1], nice=nice)
        place(0, cpus=pinned[2], nice=nice)
    except OSError:
        print("(--nice below 0 needs root or CAP_SYS_NICE: left as it was)")
        return
    if pinned[0] is not None:
        print("pinned: the service on CPU 0; the emulator and this client on CPU 1")
    if nice is not None:
        print(f"nice {nice}: the service, the emulator and this client (not the neighbours)")
