"""What only the PostgreSQL queue has: migrations under a lock, Entra sign-in, the CLI on it."""

import asyncio
import secrets
from typing import Any

import psycopg
import pytest
from azure.core.credentials import AccessToken

from engram_voice.memory.postgres_auth import OSSRDBMS_SCOPE, EntraPassword
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.postgres_schema import COMPONENT, MIGRATIONS
from engram_voice.memory.queue import EnqueueBatch, QueueUnavailableError
from tests.support.clock import FakeClock
from tests.support.entra import FakeTokenCredential
from tests.support.postgres import PostgresServer


def _batch(session: str = "vs_1", ids: tuple[str, ...] = ("m1",)) -> EnqueueBatch:
    turns = [(i, "user", f"text of {i}", None) for i in ids]
    return EnqueueBatch(session_id=session, user_id="alice", agent="elena", turns=turns)


async def test_replicas_starting_at_once_apply_each_migration_once(postgres_server):
    """Several queues opening together on an empty database migrate it exactly once."""
    database = postgres_server.new_database("migrate")
    queues = [PostgresTurnQueue(postgres_server.conninfo(database), pool_size=2) for _ in range(6)]
    await asyncio.gather(*(q.open() for q in queues))
    try:
        results = await asyncio.gather(*(q.enqueue(_batch(f"s{i}")) for i, q in enumerate(queues)))
        assert [r.accepted for r in results] == [1] * 6
    finally:
        await asyncio.gather(*(q.close() for q in queues))
    with psycopg.connect(postgres_server.conninfo(database)) as conn:
        rows = conn.execute(
            "SELECT version FROM engram_schema_migrations WHERE component = %s ORDER BY version",
            (COMPONENT,),
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))


def _entra_role(server: PostgresServer, token: str) -> tuple[str, str]:
    """Create a role whose password is ``token`` (as Azure maps an Entra principal) and its db."""
    role = f"app_{secrets.token_hex(4)}"
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{token}'")  # test-made names only
        conn.execute(f"CREATE DATABASE {role} OWNER {role}")
    conninfo = f"host={server.host} port={server.port} dbname={role} user={role} sslmode=disable"
    return role, conninfo


async def test_entra_sign_in_uses_the_managed_identity_token_as_the_password(postgres_server):
    """With Entra auth the pool signs in with a token for the PostgreSQL scope, no password."""
    token = secrets.token_urlsafe(48)
    _, conninfo = _entra_role(postgres_server, token)
    credential = FakeTokenCredential(token)
    queue = PostgresTurnQueue(conninfo, password=EntraPassword(credential), pool_size=2)
    await queue.open()
    try:
        assert (await queue.enqueue(_batch())).accepted == 1
        assert (await queue.stats()).depth == 1
    finally:
        await queue.close()
    assert credential.scopes
    assert set(credential.scopes) == {(OSSRDBMS_SCOPE,)}


async def test_a_refused_token_is_a_neutral_error_without_the_token(postgres_server):
    """A token the server refuses stops open() with QueueUnavailableError that names no secret."""
    _, conninfo = _entra_role(postgres_server, secrets.token_urlsafe(48))
    wrong = secrets.token_urlsafe(48)
    queue = PostgresTurnQueue(
        conninfo, password=EntraPassword(FakeTokenCredential(wrong)), connect_timeout=2
    )
    with pytest.raises(QueueUnavailableError) as raised:
        await queue.open()
    assert wrong not in str(raised.value)
    assert wrong not in repr(raised.value.__cause__)


class _ExpiringCredential:
    """Issues numbered tokens that expire ``lifetime`` seconds after the fake clock's now."""

    def __init__(self, clock: FakeClock, lifetime: float) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.issued = 0

    async def get_token(self, *_scopes: str, **_: Any) -> AccessToken:
        self.issued += 1
        return AccessToken(f"token-{self.issued}", int(self.clock.now + self.lifetime))

    async def close(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize("lifetime", [3600.0, 900.0, 301.0])
async def test_the_token_is_reused_until_its_refresh_margin_then_fetched_again(lifetime):
    """A cached token serves new connections until 5 minutes before expiry, never after."""
    clock = FakeClock()
    credential = _ExpiringCredential(clock, lifetime)
    source = EntraPassword(credential, refresh_margin=300, clock=clock)
    assert await source.password() == "token-1"
    clock.advance(lifetime - 300 - 1)
    assert await source.password() == "token-1"
    clock.advance(1)
    assert await source.password() == "token-2"
    assert credential.issued == 2


def test_the_dead_letters_command_lists_and_replays_on_postgres(postgres_server, capsys):
    """`engram-voice memory dead-letters` works against the PostgreSQL queue too."""
    from engram_voice.memory.cli import dead_letters_main  # noqa: PLC0415

    database = postgres_server.new_database("cli")
    clock = FakeClock()

    async def bury() -> int:
        queue = PostgresTurnQueue(postgres_server.conninfo(database), pool_size=2)
        await queue.open()
        try:
            await queue.enqueue(_batch(ids=("a", "b")))
            claim = (
                await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=clock())
            )[0]
            return await queue.dead_letter(
                owner="w",
                session_id="vs_1",
                seqs=[t.seq for t in claim.turns],
                reason="zep answered 400",
                attempts=3,
                now=clock(),
            )
        finally:
            await queue.close()

    letter = asyncio.run(bury())
    env = postgres_server.env(database, LOG_LEVEL="warning")
    assert dead_letters_main(["list"], env) == 0
    listed = capsys.readouterr().out
    assert f"{letter}\t" in listed
    assert "zep answered 400" in listed
    assert dead_letters_main(["replay", str(letter)], env) == 0
    assert "replayed 2 turns" in capsys.readouterr().out


async def test_replicas_share_one_usage_store_that_survives_them(postgres_server):
    """Two usage stores on one database (two replicas) add up, and a new one reads it all."""
    from engram_voice.usage.postgres_store import PostgresUsageStore  # noqa: PLC0415
    from engram_voice.usage.records import CallEnded, CallStarted  # noqa: PLC0415

    conninfo = postgres_server.conninfo(postgres_server.new_database("usage"))
    replicas = [PostgresUsageStore(conninfo) for _ in range(2)]
    for store in replicas:
        await store.start()
    for n, store in enumerate(replicas):
        for i in range(3):
            call = f"call-{n}-{i}"
            store.record(CallStarted(call, "alice", "elena", "voice-live", "2027-01-15", 1.0))
            store.record(CallEnded(call, "alice", "2027-01-15", 30.0, "client_hangup", 2.0))
            store.record(CallEnded(call, "alice", "2027-01-15", 30.0, "client_hangup", 3.0))
    for store in replicas:
        await store.flush()
        await store.close()
    later = PostgresUsageStore(conninfo)
    await later.start()
    try:
        (day,) = await later.daily(user_id="alice")
        assert (day.day, day.calls, day.seconds) == ("2027-01-15", 6, 180.0)
        assert (await later.describe())["backend"] == "postgres"
    finally:
        await later.close()


def test_the_usage_command_reads_the_shared_store(postgres_server, capsys):
    """`engram-voice usage` with USAGE_STORE=postgres lists every replica's usage."""
    import argparse  # noqa: PLC0415

    from engram_voice.usage.cli import usage_main  # noqa: PLC0415
    from engram_voice.usage.postgres_store import PostgresUsageStore  # noqa: PLC0415
    from engram_voice.usage.records import CallStarted  # noqa: PLC0415

    database = postgres_server.new_database("usagecli")

    async def record() -> None:
        store = PostgresUsageStore(postgres_server.conninfo(database))
        await store.start()
        store.record(CallStarted("c1", "bob", "elena", "voice-live", "2027-02-01", 1.0))
        await store.flush()
        await store.close()

    asyncio.run(record())
    env = postgres_server.env(database, USAGE_STORE="postgres", LOG_LEVEL="warning")
    args = argparse.Namespace(user=None, since=None, until=None, json=True)
    assert usage_main(args, env) == 0
    assert '"user_id": "bob"' in capsys.readouterr().out


@pytest.mark.parametrize("delivered", [1_000, 50_000])
async def test_the_figures_never_scan_the_turns_whatever_the_depth(postgres_server, delivered):
    """The stats query reads the counter rows and seeks one index, at any number of turns."""
    from engram_voice.memory.postgres_schema import STATS_SQL  # noqa: PLC0415

    database = postgres_server.new_database("plan")
    queue = PostgresTurnQueue(postgres_server.conninfo(database), pool_size=2)
    await queue.open()
    await queue.enqueue(_batch(ids=("pending",)))
    await queue.close()
    with psycopg.connect(postgres_server.conninfo(database), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memory_turns (session_id, message_id, role, accepted_at, state, "
            "delivered_at) SELECT 'vs_1', 'd' || i, 'user', i, 1, i "
            "FROM generate_series(1, %s) AS i",
            (delivered,),
        )
        conn.execute("ANALYZE memory_turns")
        plan = str(conn.execute(f"EXPLAIN {STATS_SQL}").fetchall())
    assert "Seq Scan on memory_turns" not in plan
    assert "memory_turns_pending_age" in plan


@pytest.mark.parametrize("bad", ["nul \x00 inside", "\x00", "end\x00"])
async def test_an_unstorable_request_fails_alone_in_a_shared_commit(postgres_server, bad):
    """Text PostgreSQL cannot store fails only its own request, not the others in its commit."""
    queue = PostgresTurnQueue(
        postgres_server.conninfo(postgres_server.new_database("poison")), pool_size=3
    )
    await queue.open()
    try:
        poisoned = EnqueueBatch(
            session_id="vs_bad", user_id="alice", agent="elena", turns=[("x", "user", bad, None)]
        )
        results = await asyncio.gather(
            *(queue.enqueue(_batch(f"s{i}", ("m",))) for i in range(5)),
            queue.enqueue(poisoned),
            *(queue.enqueue(_batch(f"t{i}", ("m",))) for i in range(5)),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        assert len(failed) == 1
        assert isinstance(failed[0], QueueUnavailableError)
        assert bad not in str(failed[0])
        assert (await queue.stats()).depth == 10
    finally:
        await queue.close()


async def test_a_session_row_removed_behind_the_queue_is_created_again(postgres_server):
    """A session this process knew, deleted by another (cleanup), is recreated on enqueue."""
    database = postgres_server.new_database("known")
    queue = PostgresTurnQueue(postgres_server.conninfo(database), pool_size=2)
    await queue.open()
    try:
        await queue.enqueue(_batch(ids=("a",)))
        with psycopg.connect(postgres_server.conninfo(database), autocommit=True) as conn:
            conn.execute("DELETE FROM memory_turns")
            conn.execute("DELETE FROM memory_sessions")
            conn.execute("UPDATE memory_queue_counters SET pending = 0, sessions_pending = 0")
        assert (await queue.enqueue(_batch(ids=("b",)))).accepted == 1
        claims = await queue.claim(owner="w", sessions=1, turns=10, lease_seconds=30, now=1.0)
        assert [(c.user_id, [t.message_id for t in c.turns]) for c in claims] == [("alice", ["b"])]
    finally:
        await queue.close()
