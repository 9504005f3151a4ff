"""A throwaway local PostgreSQL server from Debian's binaries, for the dev stack and tests.

``initdb`` into a folder, start ``postgres`` on a loopback port with its unix socket in
that folder, password (SCRAM) authentication with a generated password, stop by PID.
``initdb`` refuses to run as root, so as root the cluster is created and served as the
unprivileged ``nobody`` user (its folder is handed to that user). Nothing here is used
in production, where the server is Azure Database for PostgreSQL.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["LocalPostgres", "dev_cluster_dir", "postgres_bin", "start_local_postgres"]

_START_SECONDS = 30.0
_STOP_SECONDS = 15.0
_UNPRIVILEGED = "nobody"
SUPERUSER = "engram"
_SHARED_TMP = Path("/tmp")  # noqa: S108 - world-reachable for nobody, unlike $TMPDIR may be


def postgres_bin() -> Path | None:
    """Return the newest Debian PostgreSQL bin folder, or None when none is installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parts[4]) if p.parts[4].isdigit() else 0,
    )
    return found[-1].parent if found else None


def dev_cluster_dir(state: Path, *, as_root: bool) -> Path:
    """Return where the dev stack keeps its cluster for the state folder ``state``.

    Normally ``<state>/postgres``. As root the server runs as ``nobody``, which may not
    reach a folder inside the checkout, so the cluster goes under ``/tmp`` instead, in a
    folder named after the state folder's resolved path: every clone (every state folder)
    has its own cluster, and the same clone finds its cluster again on the next run.
    """
    if not as_root:
        return state / "postgres"
    key = hashlib.sha256(os.fsencode(state.resolve())).hexdigest()[:16]
    return _SHARED_TMP / f"engram-dev-postgres-{key}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_unprivileged() -> dict[str, Any]:
    """Return Popen arguments that drop root to ``nobody`` (initdb refuses root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(_UNPRIVILEGED)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


class LocalPostgres:
    """One running server: where it listens, its superuser and password, how to stop it."""

    def __init__(
        self, process: subprocess.Popen[bytes], root: Path, port: int, password: str
    ) -> None:
        self.process = process
        self.root = root
        self.host = "127.0.0.1"
        self.port = port
        self.user = SUPERUSER
        self.password = password

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

    def stop(self, *, remove: bool = True) -> None:
        """Stop the server by PID (fast shutdown, kill after a bound); remove its files."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=_STOP_SECONDS)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)


def _initdb(bindir: Path, root: Path, password: str, drop: dict[str, Any]) -> None:
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    if drop:
        os.chown(pwfile, drop["user"], drop["group"])
    try:
        subprocess.run(  # noqa: S603 - fixed binary path, arguments built here
            [
                str(bindir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            env=_env(root),
            cwd=root,
            timeout=120,
            **drop,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _env(root: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(root)}


def start_local_postgres(
    root: Path | None = None,
    *,
    fsync: bool = True,
    max_connections: int = 200,
    database: str | None = None,
    port: int | None = None,
) -> LocalPostgres:
    """Start a server whose cluster lives in ``root`` (a new temporary folder by default).

    An existing cluster in ``root`` is reused with the password saved next to it
    (``password``, mode 0600). ``database``, when given, is created if missing. ``port``
    (default: a free one) lets a test start a server again where clients expect it.
    """
    import psycopg  # noqa: PLC0415 - the driver only where a server is started

    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    root = root or Path(tempfile.mkdtemp(prefix="engram-pg-"))
    root.mkdir(parents=True, exist_ok=True)
    drop = _as_unprivileged()
    if drop:
        os.chown(root, drop["user"], drop["group"])
    saved = root / "password"
    if (root / "data" / "PG_VERSION").exists() and saved.exists():
        password = saved.read_text().strip()
    else:
        shutil.rmtree(root / "data", ignore_errors=True)
        password = secrets.token_hex(16)
        _initdb(bindir, root, password, drop)
        saved.write_text(password)
        saved.chmod(0o600)
    port = port or _free_port()
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed binary path, arguments built here
            [
                str(bindir / "postgres"),
                "-D",
                str(root / "data"),
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
            env=_env(root),
            cwd=root,
            start_new_session=True,
            **drop,
        )
    server = LocalPostgres(process, root, port, password)
    deadline = time.monotonic() + _START_SECONDS
    while True:
        if process.poll() is not None:
            text = (root / "server.log").read_text(errors="replace")
            raise RuntimeError(f"postgres exited with {process.returncode}: {text[-2000:]}")
        with contextlib.suppress(psycopg.OperationalError):
            with psycopg.connect(server.conninfo(), autocommit=True) as conn:
                if (
                    database
                    and not conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
                    ).fetchone()
                ):
                    conn.execute(f'CREATE DATABASE "{database}"')  # a name from our settings
            return server
        if time.monotonic() > deadline:
            server.stop(remove=False)
            raise RuntimeError(f"postgres did not accept connections in {_START_SECONDS:g}s")
        time.sleep(0.1)
