"""A real PostgreSQL server for tests (``engram_voice.devpostgres``), one per test session.

Debian's ``postgresql`` package provides the binaries; ``.ci/run`` installs it when
missing. The server is started by :func:`~engram_voice.devpostgres.start_local_postgres`
(initdb into a temporary folder, a free 127.0.0.1 port, unix socket in that folder, as
``nobody`` when run as root, stopped by PID). ``postgres_server`` is the session-scoped
fixture (registered by ``tests/conftest.py``); each test takes a fresh database from
:meth:`PostgresServer.new_database`.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest

from engram_voice.devpostgres import LocalPostgres, postgres_bin, start_local_postgres

__all__ = ["PostgresServer", "fixture_postgres_server", "start_postgres"]


class PostgresServer(LocalPostgres):
    """A local server that also hands out a fresh database per test."""

    databases = 0

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database with a fresh name and return the name."""
        PostgresServer.databases += 1
        name = f"{prefix}_{os.getpid()}_{self.databases}_{secrets.token_hex(3)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name made above, not user input
        return name


def start_postgres(*, fsync: bool = True, max_connections: int = 200) -> PostgresServer:
    """Start a server in a new temporary folder (see the module docstring)."""
    server = start_local_postgres(fsync=fsync, max_connections=max_connections)
    return PostgresServer(server.process, server.root, server.port, server.password)


@pytest.fixture(name="postgres_server", scope="session")
def fixture_postgres_server() -> Iterator[PostgresServer]:
    """Run one PostgreSQL server for the test session (skipped locally when not installed)."""
    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run must install it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = start_postgres(fsync=False)  # tests kill services, never this server
    try:
        yield server
    finally:
        server.stop()
