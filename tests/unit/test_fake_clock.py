"""The suite's one fake clock: it stands still, moves by hand and wakes its sleepers."""

from __future__ import annotations

import asyncio

from tests.support.clock import UNIX_2027, FakeClock


def test_the_clock_stands_still_until_moved() -> None:
    """Reading the clock never moves it; ``advance`` and ``now`` do."""
    clock = FakeClock()
    assert clock() == clock() == UNIX_2027
    clock.advance(2.5)
    assert clock() == UNIX_2027 + 2.5
    clock.now = 5.0
    assert clock() == 5.0


async def test_a_sleeper_wakes_only_when_enough_time_has_passed() -> None:
    """``sleep`` ends once the clock has been advanced by at least the time slept."""
    clock = FakeClock(100.0)
    sleeper = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    clock.advance(9)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(1)
    await asyncio.wait_for(sleeper, timeout=5)
