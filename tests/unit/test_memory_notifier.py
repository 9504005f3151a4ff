"""The PostgreSQL queue's notifier: every commit is followed by a notification, coalesced."""

from __future__ import annotations

import asyncio
import random

import pytest

from engram_voice.memory.postgres_notify import TurnNotifier


@pytest.mark.parametrize("seed", range(12))
async def test_every_commit_is_followed_by_a_notification_and_bursts_are_coalesced(seed):
    """Whatever the interleaving, each commit has a send starting after it; sends <= commits."""
    rng = random.Random(seed)
    events: list[str] = []

    async def send() -> None:
        events.append("send")
        for _ in range(rng.randint(0, 3)):  # a send takes a few loop turns, or none
            await asyncio.sleep(0)

    notifier = TurnNotifier(send, min_interval=0)
    commits = rng.randint(1, 60)
    for _ in range(commits):
        events.append("commit")
        notifier.committed()
        for _ in range(rng.randint(0, 2)):
            await asyncio.sleep(0)
    for _ in range(20):  # let the last notification go out
        await asyncio.sleep(0)
    await notifier.close()
    last_commit = max(i for i, e in enumerate(events) if e == "commit")
    assert "send" in events[last_commit:]
    for i, event in enumerate(events):
        if event == "commit":
            assert "send" in events[i + 1 :]
    assert 1 <= events.count("send") <= commits
    assert notifier.sent == events.count("send")


async def test_a_failing_send_is_not_fatal_and_the_next_commit_notifies_again():
    """A notification that fails (database gone) is dropped; later commits still notify."""
    attempts = 0

    async def send() -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise OSError("connection lost")

    notifier = TurnNotifier(send, min_interval=0)
    notifier.committed()
    for _ in range(5):
        await asyncio.sleep(0)
    notifier.committed()
    for _ in range(5):
        await asyncio.sleep(0)
    await notifier.close()
    assert (attempts, notifier.sent) == (2, 1)


@pytest.mark.parametrize("commits", [2, 10, 100])
async def test_a_burst_of_commits_within_the_interval_costs_two_notifications(commits):
    """Commits during one interval share one notification after the first one."""
    sent: list[int] = []

    async def send() -> None:
        sent.append(1)

    notifier = TurnNotifier(send, min_interval=3600)  # the interval never ends in this test
    notifier.committed()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    for _ in range(commits - 1):
        notifier.committed()
        await asyncio.sleep(0)
    assert len(sent) == 1
    await notifier.close()  # the one owed is sent on close
    assert len(sent) == 2
