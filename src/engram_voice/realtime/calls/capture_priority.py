"""The capture process's CPU priority: below the service's, so minting wins a shared core.

Capture is background work with slack (a turn stored 50 ms later changes nothing), while
every mint and call set-up has a caller waiting. On a core the two share, Linux's fair
scheduler lets a running task finish a slice before a waking one gets the CPU, so capture
at an equal or merely lower priority still holds mints up by up to a slice. Three levels
(``REALTIME_CAPTURE_PRIORITY``; ``sched(7)``):

- ``idle``: ``SCHED_IDLE``, runs only when the service (and anything else) leaves the core
  free, and is preempted the moment a request arrives. Under sustained CPU saturation it
  starves: the service's watchdog then kills it (its calls fall back to the browser's
  posts) and starts the next one at ``normal``.
- ``low``: ``SCHED_BATCH`` at nice 19: never preempts on waking, and a weight of 1.5 % of
  a nice-0 task when both want the core, so it never starves entirely.
- ``normal``: nice 5 below the service.

An unprivileged process can lower its priority but never raise it again (``sched(7)``,
``RLIMIT_NICE``), so each level is set once, by the capture process itself at start.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

import structlog

__all__ = ["NORMAL_NICE", "PRIORITIES", "lower_priority"]

PRIORITIES: Final = ("idle", "low", "normal")
"""The levels ``REALTIME_CAPTURE_PRIORITY`` accepts, lowest first."""
NORMAL_NICE: Final = 5
"""How much lower ``normal`` runs than the service (nice values add up)."""
_LOW_NICE: Final = 19

_logger = structlog.get_logger("engram_voice.realtime.calls")


def lower_priority(priority: str) -> str:
    """Lower this process's CPU priority to ``priority``; return the level in effect.

    Applied before any thread starts (threads inherit it). Where the platform has no such
    policy (not Linux) or refuses it, the process falls back to ``normal``'s nice value and
    says so in a ``realtime.capture_priority_unavailable`` event. Raises ValueError for a
    level not in :data:`PRIORITIES`.
    """
    if priority not in PRIORITIES:
        raise ValueError(f"unknown capture priority {priority!r}")
    if priority != "normal":
        policy: int | None = getattr(
            os, "SCHED_IDLE" if priority == "idle" else "SCHED_BATCH", None
        )
        try:
            _set_policy(policy, nice=_LOW_NICE if priority == "low" else None)
        except OSError as exc:
            _logger.warning(
                "realtime.capture_priority_unavailable", wanted=priority, error=str(exc)
            )
        else:
            return priority
    with contextlib.suppress(OSError):
        os.nice(NORMAL_NICE)
    return "normal"


def _set_policy(policy: int | None, *, nice: int | None) -> None:
    """Switch to ``policy`` (then to the absolute ``nice``); OSError where not possible."""
    if policy is None:
        raise OSError("this platform has no such scheduling policy")
    os.sched_setscheduler(0, policy, os.sched_param(0))
    if nice is not None:
        os.nice(nice - os.nice(0))
