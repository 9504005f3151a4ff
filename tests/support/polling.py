"""One bounded wait for tests: poll a condition until it holds or a deadline passes.

Tests never sleep for a fixed time hoping something happened; they poll with a bound and
fail with a message that says what never happened and what was last seen.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, cast

__all__ = ["async_poll_until", "poll_until"]

_T = TypeVar("_T")


def _timeout(what: str, timeout: float, last: object) -> TimeoutError:
    return TimeoutError(f"{what} did not happen within {timeout} s (last seen: {last!r})")


def poll_until(
    predicate: Callable[[], _T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    what: str = "the condition",
) -> _T:
    """Call ``predicate`` until it returns a truthy value and return that value.

    Raises TimeoutError naming ``what`` and the last falsy value after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timeout(what, timeout, last)
        time.sleep(interval)


async def async_poll_until(
    predicate: Callable[[], _T | Awaitable[_T]],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - the same bound as poll_until, not a cancel scope
    interval: float = 0.05,
    what: str = "the condition",
) -> _T:
    """Call (and await, when it is a coroutine function) ``predicate`` until it is truthy.

    The event loop keeps running between polls; returns the truthy value and raises
    TimeoutError like :func:`poll_until`.
    """
    deadline = time.monotonic() + timeout
    while True:
        answer = predicate()
        last = cast("_T", await answer) if inspect.isawaitable(answer) else answer
        if last:
            return last
        if time.monotonic() >= deadline:
            raise _timeout(what, timeout, last)
        await asyncio.sleep(interval)
