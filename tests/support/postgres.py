"""A real PostgreSQL server for tests: initdb into a temporary folder, loopback, stopped by PID.

Debian's ``postgresql`` package (``/usr/lib/postgresql/*/bin``) provides the binaries;
``.ci/run`` installs it when missing. ``initdb`` refuses to run as root, so as root the
cluster is created and served as the unprivileged ``nobody`` user (the temporary folder
is handed to it). The server listens on a free 127.0.0.1 port with its unix socket in the
temporary folder, uses password (SCRAM) authentication, and is stopped by its PID.

``postgres_server`` is the session-scoped fixture (registered by ``tests/conftest.py``);
each test takes a fresh database from :meth:`PostgresServer.new_database`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

__all__ = ["PostgresServer", "fixture_postgres_server", "postgres_bin", "start_postgres"]

_START_SECONDS = 30.0
_STOP_SECONDS = 15.0
_UNPRIVILEGED = "nobody"


def postgres_bin() -> Path | None:
    """Return the newest Debian PostgreSQL bin folder, or None when none is installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[4]) if p.parts[4].isdigit() else 0,
    )
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One running server: where it listens, its superuser, and how to stop it."""

    def __init__(self, process: subprocess.Popen[bytes], root: Path, port: int, password: str):
        self.process = process
        self.root = root
        self.host = "127.0.0.1"
        self.port = port
        self.user = "engram"
        self.password = password
        self._databases = 0

    @property
    def pid(self) -> int:
        """Return the postmaster's PID."""
        return self.process.pid

    def conninfo(self, database: str = "postgres") -> str:
        """Return a libpq connection string for ``database`` (superuser, password auth)."""
        return (
            f"host={self.host} port={self.port} dbname={database} user={self.user} "
            f"password={self.password} sslmode=disable connect_timeout=5"
        )

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database with a fresh name and return the name."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}_{secrets.token_hex(3)}"
        with psycopg.connect(self.conninfo(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # name made above, not user input
        return name

    def env(self, database: str, **extra: str) -> dict[str, str]:
        """Return the ``MEMORY_*`` settings of a service whose queue is ``database`` here."""
        return {
            "MEMORY_QUEUE": "postgres",
            "MEMORY_POSTGRES_HOST": self.host,
            "MEMORY_POSTGRES_PORT": str(self.port),
            "MEMORY_POSTGRES_DB": database,
            "MEMORY_POSTGRES_USER": self.user,
            "MEMORY_POSTGRES_PASSWORD": self.password,
            "MEMORY_POSTGRES_SSLMODE": "disable",
            **extra,
        }

    def stop(self) -> None:
        """Stop the server by PID (fast shutdown, then kill after a bound), remove its files."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_SECONDS)
        shutil.rmtree(self.root, ignore_errors=True)


def _as_unprivileged() -> dict[str, object]:
    """Return Popen arguments that drop root to ``nobody`` (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    import pwd  # noqa: PLC0415 - POSIX only, needed only as root

    entry = pwd.getpwnam(_UNPRIVILEGED)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def start_postgres(*, fsync: bool = True, max_connections: int = 200) -> PostgresServer:
    """Create a cluster in a new temporary folder and start a server on a free port."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="engram-pg-"))
    drop = _as_unprivileged()
    if drop:
        os.chown(root, int(str(drop["user"])), int(str(drop["group"])))
    password = secrets.token_hex(16)
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if drop:
        os.chown(pwfile, int(str(drop["user"])), int(str(drop["group"])))
    data = root / "data"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "HOME": str(root)}
    subprocess.run(  # noqa: S603 - fixed binary path, arguments built here
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "engram",
            "--auth=scram-sha-256",
            f"--pwfile={pwfile}",
            "--encoding=UTF8",
            "--no-instructions",
        ],
        check=True,
        capture_output=True,
        env=env,
        cwd=root,
        timeout=120,
        **drop,  # type: ignore[arg-type]
    )
    pwfile.unlink()
    port = _free_port()
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(  # noqa: S603
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"max_connections={max_connections}",
            "-c",
            f"fsync={'on' if fsync else 'off'}",
            "-c",
            "shared_buffers=64MB",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=root,
        start_new_session=True,
        **drop,  # type: ignore[arg-type]
    )
    log.close()
    server = PostgresServer(process, root, port, password)
    deadline = time.monotonic() + _START_SECONDS
    while True:
        if process.poll() is not None:
            text = (root / "server.log").read_text(errors="replace")
            raise RuntimeError(f"postgres exited with {process.returncode}: {text[-2000:]}")
        with contextlib.suppress(psycopg.OperationalError):
            with psycopg.connect(server.conninfo()) as conn:
                conn.execute("SELECT 1")
            return server
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"postgres did not accept connections in {_START_SECONDS:g}s")
        time.sleep(0.1)


@pytest.fixture(name="postgres_server", scope="session")
def fixture_postgres_server() -> Iterator[PostgresServer]:
    """Run one PostgreSQL server for the test session (skipped when not installed)."""
    if postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run must install it")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = start_postgres(fsync=False)  # tests kill services, never this server
    try:
        yield server
    finally:
        server.stop()
