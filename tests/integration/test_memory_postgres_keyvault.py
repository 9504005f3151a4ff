"""The PostgreSQL password from Key Vault: read with the real SDK, rotated without a restart.

A real PostgreSQL role's password is changed (``ALTER ROLE``) and written as a new version
into the HTTPS Key Vault stand-in, as an operator rotates it; the queue's existing
connections are then terminated on the server, so only a sign-in with the new password
lets the queue store turns again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import psycopg
import pytest
from structlog.testing import capture_logs

from engram_voice.memory.postgres_auth import KeyVaultPassword
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.postgres_sink_state import PostgresSinkState
from engram_voice.memory.queue import EnqueueBatch, QueueUnavailableError
from tests.support.keyvault import KeyVaultStandIn
from tests.support.keyvault_fixtures import SourceFactory
from tests.support.polling import async_poll_until, poll_until
from tests.support.postgres import PostgresServer

NAME = "postgres-password"
PasswordFactory = Callable[..., KeyVaultPassword]


@pytest.fixture(name="make_password")
def fixture_make_password(vault_sources: SourceFactory) -> PasswordFactory:
    """Return a factory of Key Vault password sources on ``vault`` (closed after the test)."""

    def make(*, refresh_seconds: float = 300.0, refetch_seconds: float = 30.0) -> KeyVaultPassword:
        source = vault_sources(
            secret_name=NAME,
            refresh_seconds=refresh_seconds,
            name_setting="MEMORY_POSTGRES_PASSWORD_SECRET",
            upstream="PostgreSQL",
        )
        return KeyVaultPassword(source, refetch_seconds=refetch_seconds)

    return make


def _role(server: PostgresServer, password: str) -> tuple[str, str]:
    """Create a role signing in with ``password`` and its database; return both names."""
    role = f"kv_{secrets.token_hex(4)}"
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")  # test-made values
        conn.execute(f"CREATE DATABASE {role} OWNER {role}")
    conninfo = f"host={server.host} port={server.port} dbname={role} user={role} sslmode=disable"
    return role, conninfo


def _rotate(server: PostgresServer, vault: KeyVaultStandIn, role: str) -> tuple[str, str]:
    """Change the role's password on the server and in the vault; cut its connections.

    Every session that began before the change is ended, including one still signing in
    when it was made (its user name shows only once it has signed in with the old
    password), so a store that succeeds afterwards signed in with the new one.
    """
    new = secrets.token_urlsafe(24)
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} PASSWORD '{new}'")  # test-made values
        cutoff = conn.execute("SELECT clock_timestamp()").fetchone()
    version = vault.set_secret(NAME, new)
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:

        def older_sessions_gone() -> bool:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend'"
                " AND pid <> pg_backend_pid() AND backend_start <= %s"
                " AND (usename = %s OR usename IS NULL)",
                (cutoff[0] if cutoff else None, role),
            ).fetchall()
            old = [pid for (pid,) in rows]
            if old:  # pg_terminate_backend only signals: look again until they are gone
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (old,)
                )
            return not old

        poll_until(older_sessions_gone, timeout=10, interval=0.05, what=f"{role}'s old sessions")
    return new, version


def _batch(n: int) -> EnqueueBatch:
    return EnqueueBatch(
        session_id=f"vs_{n}", user_id="alice", agent="elena", turns=[(f"m{n}", "user", "hi", None)]
    )


Store = PostgresTurnQueue | PostgresSinkState


def _open_store(kind: str, conninfo: str, password: KeyVaultPassword) -> Store:
    """Return the queue, or the v4 sink's state store, on the role's database (1 s loans)."""
    if kind == "queue":
        return PostgresTurnQueue(conninfo, password=password, pool_size=2, store_timeout=1.0)
    return PostgresSinkState(
        conninfo, sink="zep-v4", password=password, pool_size=2, store_timeout=1.0
    )


async def _stores(store: Store, n: int) -> bool:
    try:
        if isinstance(store, PostgresTurnQueue):
            return (await store.enqueue(_batch(n))).accepted + 1 > 0
        return await store.put_id("thread", f"vs_{n}", f"z{n}", now=float(n)) == f"z{n}"
    except QueueUnavailableError:
        return False


@pytest.mark.parametrize(
    ("rotations", "periods"),
    [(1, (0.3, 300.0)), (3, (0.3, 300.0)), (1, (300.0, 0.2)), (3, (300.0, 0.2))],
    ids=["refresh-once", "refresh-thrice", "refetch-once", "refetch-thrice"],
)
@pytest.mark.parametrize("kind", ["queue", "sink_state"])
async def test_a_rotated_password_signs_in_new_connections_without_a_restart(
    *,
    kind: str,
    postgres_server: PostgresServer,
    vault: KeyVaultStandIn,
    make_password: PasswordFactory,
    rotations: int,
    periods: tuple[float, float],
) -> None:
    """After each rotation the store writes again, by the refresh or by re-reading at once."""
    first = secrets.token_urlsafe(24)
    role, conninfo = _role(postgres_server, first)
    vault.set_secret(NAME, first)
    refresh_seconds, refetch_seconds = periods  # one of them is too long to explain it
    password = make_password(refresh_seconds=refresh_seconds, refetch_seconds=refetch_seconds)
    queue = _open_store(kind, conninfo, password)
    used = [first]
    with capture_logs() as logs:
        await queue.open()
        try:
            assert await _stores(queue, 0)
            for n in range(1, rotations + 1):
                new, version = _rotate(postgres_server, vault, role)
                used.append(new)
                await async_poll_until(
                    lambda n=n: _stores(queue, n),
                    timeout=30,
                    interval=0.1,
                    what=f"storing with rotated password {n}",
                )
                assert password.describe()["version"] == version[:8]
        finally:
            await queue.close()
    logged = repr(logs)
    assert not [p for p in used if p in logged]


@pytest.mark.parametrize("fault", ["forbidden", "missing", "vault down"])
async def test_an_unreadable_password_is_a_neutral_reason_until_the_vault_answers(
    postgres_server: PostgresServer,
    vault: KeyVaultStandIn,
    make_password: PasswordFactory,
    fault: str,
) -> None:
    """A refusing, empty or down vault fails open() with a reason (no secret), then opens."""
    value = secrets.token_urlsafe(24)
    _, conninfo = _role(postgres_server, value)
    if fault == "forbidden":
        vault.set_secret(NAME, value)
        vault.forbidden.add(NAME)
    elif fault == "vault down":
        vault.set_secret(NAME, value)
        vault.stop()
    queue = PostgresTurnQueue(
        conninfo, password=make_password(), pool_size=2, store_timeout=1.0, connect_timeout=1.0
    )
    with pytest.raises(QueueUnavailableError) as refused:
        await queue.open()
    assert refused.value.reason.startswith("database password unavailable: Key Vault")
    assert value not in refused.value.reason
    vault.forbidden.discard(NAME)
    if fault == "missing":
        vault.set_secret(NAME, value)
    if fault == "vault down":
        vault.start()
    await queue.open()
    try:
        assert await _stores(queue, 1)
    finally:
        await queue.close()
