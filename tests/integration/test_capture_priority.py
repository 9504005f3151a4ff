"""The capture process runs below the service's CPU priority, at the level configured.

``REALTIME_CAPTURE_PRIORITY`` picks ``idle`` (SCHED_IDLE), ``low`` (SCHED_BATCH at nice 19)
or ``normal`` (nice 5 below the service); a capture process that starved (killed by the
stall watch) is replaced by one at ``normal``. The levels are read back from the kernel.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from engram_voice.realtime.calls import capture_process
from engram_voice.realtime.calls.capture_priority import PRIORITIES, lower_priority
from tests.support.capture_hosts import (
    Host,
    RotatingKeys,
    Upstream,
    process_pid,
    serve_upstream,
    stall_until_lost,
)

pytestmark = pytest.mark.skipif(
    not hasattr(os, "SCHED_IDLE"), reason="scheduling policies are Linux's"
)

_POLICY = {"idle": "SCHED_IDLE", "low": "SCHED_BATCH", "normal": "SCHED_OTHER"}


@pytest.fixture(name="upstream")
async def fixture_upstream() -> AsyncIterator[Upstream]:
    """Serve the loopback upstream on 127.0.0.1."""
    async with serve_upstream() as upstream:
        yield upstream


def _expected_nice(priority: str) -> int:
    """Return the nice value a capture process started by this process runs at."""
    own = os.getpriority(os.PRIO_PROCESS, 0)
    return {"idle": own, "low": 19, "normal": min(19, own + 5)}[priority]


@pytest.mark.parametrize("priority", PRIORITIES)
async def test_the_capture_process_runs_at_the_configured_priority(
    upstream: Upstream, priority: str
) -> None:
    """Each level shows in the kernel's policy and nice value of the process and in /status."""
    host = Host("process", RotatingKeys(), priority=priority)
    try:
        call = await host.open(upstream.url)
        pid = process_pid(host)
        assert os.sched_getscheduler(pid) == getattr(os, _POLICY[priority])
        assert os.getpriority(os.PRIO_PROCESS, pid) == _expected_nice(priority)
        assert host.process is not None
        assert host.process.describe()["priority"] == priority
        await call.hangup("client_hangup")
    finally:
        await host.close()


async def test_a_starved_capture_process_is_replaced_by_one_at_normal_priority(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A low-priority capture process killed by the stall watch comes back at ``normal``."""
    monkeypatch.setattr(capture_process, "STALL_SECONDS", 3.0)
    host = Host("process", RotatingKeys(), priority="idle")
    try:
        call = await host.open(upstream.url)
        pid = await stall_until_lost(host, call)  # starving looks like this: silence
        await call.hangup("client_hangup")
        with capture_logs() as logs:
            again = await host.open(upstream.url)
        raised = [e for e in logs if e["event"] == "realtime.capture_priority_raised"]
        assert raised == [
            {"event": "realtime.capture_priority_raised", "was": "idle", "now": "normal",
             "log_level": "warning"}
        ]  # fmt: skip
        new_pid = process_pid(host)
        assert new_pid != pid
        assert os.sched_getscheduler(new_pid) == os.SCHED_OTHER
        assert host.process is not None
        assert host.process.describe()["priority"] == "normal"
        await again.hangup("client_hangup")
    finally:
        await host.close()


def test_an_unknown_priority_is_refused() -> None:
    """A level outside idle/low/normal raises ValueError before touching the scheduler."""
    with pytest.raises(ValueError, match="unknown capture priority"):
        lower_priority("realtime")


_WITHOUT_POLICY = """
import os, sys, threading
from structlog.testing import capture_logs
from engram_voice.realtime.calls import capture_priority
del os.SCHED_IDLE, os.SCHED_BATCH
with capture_logs() as logs:
    level = capture_priority.lower_priority(sys.argv[1])
seen = []
thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
thread.start(); thread.join()
print(level, os.sched_getscheduler(0), seen[0], [e["event"] for e in logs])
"""


@pytest.mark.parametrize("priority", ["idle", "low"])
def test_without_the_policy_the_capture_process_falls_back_to_normal(priority: str) -> None:
    """Where the platform lacks the policy, the process runs at normal and says so."""
    level, policy, thread_policy, events = _run(_WITHOUT_POLICY, priority).split(" ", 3)
    assert (level, int(policy), int(thread_policy)) == ("normal", os.SCHED_OTHER, os.SCHED_OTHER)
    assert "realtime.capture_priority_unavailable" in events


_THREADS = """
import os, sys, threading
from engram_voice.realtime.calls.capture_priority import lower_priority
lower_priority(sys.argv[1])
seen = []
thread = threading.Thread(target=lambda: seen.append(os.sched_getscheduler(0)))
thread.start(); thread.join()
print(os.sched_getscheduler(0), seen[0])
"""


@pytest.mark.parametrize("priority", PRIORITIES)
def test_threads_started_after_the_change_inherit_the_priority(priority: str) -> None:
    """The level is set before any thread starts, and threads (the executor's) inherit it."""
    wanted = getattr(os, _POLICY[priority])
    assert [int(v) for v in _run(_THREADS, priority).split()] == [wanted, wanted]


def _run(script: str, priority: str) -> str:
    """Run ``script`` with ``priority`` in a fresh interpreter (it changes its scheduling)."""
    done = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        [sys.executable, "-c", script, priority],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout
