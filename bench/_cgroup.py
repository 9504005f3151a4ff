"""A fixed CPU budget per measured process, as a container platform gives each replica.

Azure Container Apps gives every replica its own vCPU allowance (0.25-4 per replica). On a
small bench machine the processes under test share the cores with PostgreSQL, the Zep
stand-in and the load generator, so "two replicas against one" measures how much CPU is
left over, not how the design scales. :func:`cpu_budget` puts each measured process in
its own Linux cgroup with a CFS quota (``cpu.cfs_quota_us``, cgroup v1, or ``cpu.max``,
cgroup v2), so every replica gets the same allowance whatever else runs, and the
bench's ratios compare like with like. Where no writable cgroup hierarchy exists (not
root, a read-only ``/sys/fs/cgroup``), :func:`budget_available` says so and the bench
runs unbudgeted and says that instead.

Source of the interface: Linux ``Documentation/scheduler/sched-bwc.rst`` (CFS bandwidth
control) and ``Documentation/admin-guide/cgroup-v2.rst`` (``cpu.max``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

__all__ = ["budget_available", "cpu_budget", "throttled_seconds"]

_V1 = Path("/sys/fs/cgroup/cpu")
_V2 = Path("/sys/fs/cgroup")
_PERIOD_US = 100_000


def _root() -> tuple[Path, bool] | None:
    """Return the writable cpu hierarchy and whether it is cgroup v2, or ``None``."""
    if (_V1 / "cpu.cfs_quota_us").exists() and os.access(_V1, os.W_OK):
        return _V1, False
    if (_V2 / "cgroup.controllers").exists() and os.access(_V2, os.W_OK):
        controllers = (_V2 / "cgroup.subtree_control").read_text().split()
        if "cpu" in controllers:
            return _V2, True
    return None


def budget_available() -> bool:
    """Whether this process may create cgroups with a CPU quota (root, writable hierarchy)."""
    return _root() is not None


@contextlib.contextmanager
def cpu_budget(pid: int, cpus: float, *, label: str = "bench") -> Iterator[Path | None]:
    """Limit process ``pid`` (and the threads and children it starts later) to ``cpus`` CPUs.

    Yields the cgroup's directory (``None`` when no budget is possible, in which case the
    process runs unlimited). On exit the process is moved back to the root group if it
    still lives and the group is removed. ``cpus`` is in CPUs (0.5 = half a core per
    100 ms period); raises ``ValueError`` when it is not positive.
    """
    if cpus <= 0:
        raise ValueError("cpus must be positive")
    root = _root()
    if root is None:
        yield None
        return
    base, v2 = root
    group = base / f"engram-{label}-{secrets.token_hex(4)}"
    group.mkdir()
    quota = max(1000, int(cpus * _PERIOD_US))
    try:
        if v2:
            (group / "cpu.max").write_text(f"{quota} {_PERIOD_US}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(_PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        _move_all(pid, group / "cgroup.procs")
        yield group
    finally:
        with contextlib.suppress(OSError):
            _move_all(pid, base / "cgroup.procs")
        for leftover in _procs(group):
            with contextlib.suppress(OSError):
                (base / "cgroup.procs").write_text(str(leftover))
        with contextlib.suppress(OSError):
            group.rmdir()


def throttled_seconds(group: Path | None) -> float | None:
    """Seconds the group's processes waited because their budget was spent, or ``None``."""
    if group is None:
        return None
    stat = dict(
        line.split(maxsplit=1) for line in (group / "cpu.stat").read_text().splitlines() if line
    )
    if "throttled_time" in stat:  # v1: nanoseconds
        return int(stat["throttled_time"]) / 1e9
    if "throttled_usec" in stat:  # v2: microseconds
        return int(stat["throttled_usec"]) / 1e6
    return None


def _move_all(pid: int, procs: Path) -> None:
    """Move ``pid`` and its live descendants into the group whose ``cgroup.procs`` is given."""
    for member in [pid, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            procs.write_text(str(member))


def _descendants(pid: int) -> list[int]:
    """Return the pids of ``pid``'s live child processes, recursively (from /proc)."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            children.extend(int(c) for c in task.read_text().split())
    return [c for child in children for c in (child, *_descendants(child))]


def _procs(group: Path) -> list[int]:
    """Return the pids currently in ``group`` (empty if it is gone)."""
    try:
        return [int(p) for p in (group / "cgroup.procs").read_text().split()]
    except OSError:
        return []
