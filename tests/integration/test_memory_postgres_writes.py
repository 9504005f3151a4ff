"""A PostgreSQL group write is one statement (one round trip) for sessions the process knows.

``write_group`` runs on a real server through a connection that counts the statements it
sends. Random groups (new and known sessions, a foreign user now and then, repeated turn
ids) must get exactly the answers a plain model gives, with one statement when every
session is known and two when some are new.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest

from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.postgres_writes import write_group
from engram_voice.memory.queue import EnqueueBatch, EnqueueResult, SessionMismatchError
from tests.support.postgres import PostgresServer


class _Counting:
    """A real autocommit connection that counts the statements sent through it."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn
        self.statements = 0

    async def execute(self, query: Any, params: Any = None) -> Any:
        """Send one statement and count it."""
        self.statements += 1
        return await self._conn.execute(query, params)


def _group(rng: random.Random, turn_ids: list[str]) -> list[EnqueueBatch]:
    """Return 1-12 batches over 6 sessions, each of 1-3 turns drawn from ``turn_ids``."""
    batches = []
    for _ in range(rng.randint(1, 12)):
        session = f"vs_{rng.randrange(6)}"
        user = "intruder" if rng.random() < 0.15 else f"user_{session}"
        turns = [(rng.choice(turn_ids), "user", "hello", None) for _ in range(rng.randint(1, 3))]
        batches.append(EnqueueBatch(session_id=session, user_id=user, agent="elena", turns=turns))
    return batches


def _model(
    batches: list[EnqueueBatch], owners: dict[str, str], stored: set[tuple[str, str]]
) -> list[EnqueueResult | SessionMismatchError]:
    """Return the answers a group must get (``owners`` and ``stored`` are updated)."""
    answers: list[EnqueueResult | SessionMismatchError] = []
    for batch in batches:
        owner = owners.setdefault(batch.session_id, batch.user_id)
        if owner != batch.user_id:
            answers.append(SessionMismatchError(batch.session_id))
            continue
        accepted = 0
        for message_id, *_ in batch.turns:
            if (batch.session_id, message_id) not in stored:
                stored.add((batch.session_id, message_id))
                accepted += 1
        answers.append(EnqueueResult(accepted=accepted, duplicates=len(batch.turns) - accepted))
    return answers


def _comparable(answers: list[EnqueueResult | SessionMismatchError]) -> list[Any]:
    return [("mismatch", str(a)) if isinstance(a, SessionMismatchError) else a for a in answers]


@pytest.mark.parametrize("seed", range(6))
async def test_a_group_of_known_sessions_is_one_statement(
    postgres_server: PostgresServer, seed: int
) -> None:
    """Random groups get the model's answers in one statement (two when a session is new)."""
    rng = random.Random(seed)
    conninfo = postgres_server.conninfo(postgres_server.new_database("writes"))
    queue = PostgresTurnQueue(conninfo)
    await queue.open()  # migrates
    await queue.close()
    owners: dict[str, str] = {}
    stored: set[tuple[str, str]] = set()
    known: set[str] = set()
    turn_ids = [f"m{i}" for i in range(10)]
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        for now in range(1, 6):
            batches = _group(rng, turn_ids)
            expected = _model(batches, owners, stored)
            counting = _Counting(conn)
            answers = await write_group(counting, batches, float(now), known)  # type: ignore[arg-type]
            assert _comparable(answers) == _comparable(expected)
            new = {b.session_id for b in batches} - known
            assert counting.statements == (2 if new else 1)
            known |= {b.session_id for b in batches}
