"""The queue seam: drivers stay inside their backend, one factory builds every queue."""

import ast
from pathlib import Path

import pytest

from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.memory.backends import build_queue
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sqlite_queue import SqliteTurnQueue

SRC = Path(__file__).resolve().parents[2] / "src" / "engram_voice"
DRIVERS = {"sqlite3": "sqlite_", "psycopg": "postgres_", "psycopg_pool": "postgres_"}
"""Each driver module and the file-name prefix of the only modules allowed to use it."""


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((SRC / "memory").glob("*.py")), ids=lambda p: p.name)
def test_a_queue_driver_is_imported_only_by_its_backend(path):
    """No memory module outside a backend imports sqlite3 or psycopg (or catches their errors)."""
    used = {driver for driver in DRIVERS if driver in _imports(path)}
    assert {d for d in used if not path.name.startswith(DRIVERS[d])} == set()


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_only_the_factory_constructs_a_queue_backend(path):
    """Service, worker and CLI get their queue from build_queue, never a backend class."""
    if path.name == "backends.py":
        return
    text = path.read_text()
    assert "SqliteTurnQueue(" not in text or path.name == "sqlite_queue.py"
    assert "PostgresTurnQueue(" not in text or path.name == "postgres_queue.py"


def _settings(env: dict[str, str]) -> MemorySettings:
    reader = EnvReader(env)
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def test_the_factory_builds_the_configured_backend(tmp_path):
    """MEMORY_QUEUE picks the backend: SQLite by default, PostgreSQL when asked."""
    sqlite = build_queue(_settings({"MEMORY_SQLITE_PATH": str(tmp_path / "q.db")}))
    postgres = build_queue(
        _settings(
            {
                "MEMORY_QUEUE": "postgres",
                "MEMORY_POSTGRES_HOST": "127.0.0.1",
                "MEMORY_POSTGRES_USER": "engram",
                "MEMORY_POSTGRES_PASSWORD": "not-logged",
            }
        )
    )
    assert isinstance(sqlite, SqliteTurnQueue)
    assert isinstance(postgres, PostgresTurnQueue)
    assert (sqlite.backend, postgres.backend) == ("sqlite", "postgres")
    assert "not-logged" not in repr(postgres)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, ["MEMORY_POSTGRES_HOST", "MEMORY_POSTGRES_USER", "MEMORY_POSTGRES_PASSWORD"]),
        ({"MEMORY_POSTGRES_HOST": "db", "MEMORY_POSTGRES_USER": "u"}, ["MEMORY_POSTGRES_PASSWORD"]),
        ({"MEMORY_POSTGRES_HOST": "db", "MEMORY_POSTGRES_AUTH": "entra"}, ["MEMORY_POSTGRES_USER"]),
        ({"MEMORY_POSTGRES_USER": "u", "MEMORY_POSTGRES_PASSWORD": "p"}, ["MEMORY_POSTGRES_HOST"]),
        (
            {
                "MEMORY_POSTGRES_HOST": "db",
                "MEMORY_POSTGRES_USER": "u",
                "MEMORY_POSTGRES_PASSWORD": "p",
                "MEMORY_POSTGRES_SSLMODE": "on",
            },
            ["MEMORY_POSTGRES_SSLMODE"],
        ),
    ],
)
def test_an_incomplete_postgres_configuration_stops_start_up_naming_each_setting(env, missing):
    """MEMORY_QUEUE=postgres without its server, role or credential fails with one message."""
    with pytest.raises(ConfigurationError) as raised:
        _settings({"MEMORY_QUEUE": "postgres", **env})
    for name in missing:
        assert name in str(raised.value)


def test_entra_sign_in_needs_no_password():
    """With MEMORY_POSTGRES_AUTH=entra no password is read or kept."""
    settings = _settings(
        {
            "MEMORY_QUEUE": "postgres",
            "MEMORY_POSTGRES_HOST": "db.example",
            "MEMORY_POSTGRES_USER": "engram-app",
            "MEMORY_POSTGRES_AUTH": "entra",
            "MEMORY_POSTGRES_PASSWORD": "ignored",
            "AZURE_CLIENT_ID": "00000000-0000-0000-0000-000000000001",
        }
    )
    assert settings.postgres is not None
    assert settings.postgres.password is None
    assert settings.postgres.client_id == "00000000-0000-0000-0000-000000000001"
