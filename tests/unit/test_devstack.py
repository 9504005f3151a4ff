"""How `engram-voice dev` words a child's exit status, for every kind of status."""

from __future__ import annotations

import signal

import pytest

from engram_voice.devstack import DevSettings, describe_exit
from engram_voice.envreader import EnvReader


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (-signal.SIGTERM, "killed by SIGTERM (signal 15): something asked it to stop"),
        (-signal.SIGKILL, "killed by SIGKILL (signal 9): it was killed at once"),
        (-signal.SIGINT, "killed by SIGINT (signal 2): it was interrupted"),
        (-signal.SIGSEGV, "killed by SIGSEGV (signal 11): it crashed"),
        (-signal.SIGHUP, "killed by SIGHUP (signal 1): a signal ended it"),
        (-200, "killed by signal 200"),
        (0, "exit status 0: it stopped on its own"),
        (1, "exit status 1: it failed"),
        (2, "exit status 2: invalid configuration"),
        (3, "exit status 3: it could not start"),
        (7, "exit status 7: it failed"),
    ],
)
def test_every_exit_status_is_put_in_words(status: int, words: str) -> None:
    """Signals are named with their number and meaning; exit codes say what they mean."""
    assert describe_exit(status).startswith(words)


@pytest.mark.parametrize(
    ("env", "starts"),
    [
        ({}, False),
        ({"MEMORY_QUEUE": "sqlite"}, False),
        ({"MEMORY_QUEUE": "postgres"}, True),
        ({"MEMORY_QUEUE": "postgres", "MEMORY_POSTGRES_HOST": "db.example"}, False),
    ],
)
def test_the_dev_stack_starts_postgres_only_for_a_postgres_queue_without_a_server(
    env: dict[str, str], starts: bool
) -> None:
    """A local PostgreSQL is started when MEMORY_QUEUE=postgres names no server, else not."""
    reader = EnvReader(env)
    settings = DevSettings.from_env(reader)
    reader.raise_if_invalid()
    assert settings.local_postgres is starts
