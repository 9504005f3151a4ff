"""How `engram-voice dev` words a child's exit status and where it keeps its local PostgreSQL."""

from __future__ import annotations

import signal
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engram_voice.devpostgres import dev_cluster_dir
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


@pytest.mark.parametrize("as_root", [False, True], ids=["user", "root"])
@given(
    clones=st.lists(
        st.text(alphabet=string.ascii_letters + string.digits + "-_. ", min_size=1, max_size=12)
        .map(str.strip)
        .filter(lambda name: name not in {"", ".", ".."}),
        min_size=2,
        max_size=5,
        unique=True,
    )
)
def test_every_clone_gets_its_own_dev_cluster_found_again_next_run(
    as_root: bool, clones: list[str]
) -> None:
    """Distinct clones' state folders give distinct cluster folders; one clone always the same."""
    states = [Path("/srv/checkouts") / name / "var" for name in clones]
    roots = [dev_cluster_dir(state, as_root=as_root) for state in states]
    assert len(set(roots)) == len(states)
    assert roots == [dev_cluster_dir(state, as_root=as_root) for state in states]
    for state, root in zip(states, roots, strict=True):
        if as_root:  # nobody must reach it: directly under the world-reachable /tmp
            assert root.parent == Path("/tmp")  # noqa: S108
            assert root.name.startswith("engram-dev-postgres-")
        else:
            assert root == state / "postgres"


def test_a_clone_reached_by_another_spelling_keeps_its_dev_cluster(tmp_path: Path) -> None:
    """The root cluster folder follows the state folder's resolved path, not its spelling."""
    state = tmp_path / "clone" / "var"
    state.mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "clone")
    spellings = [state, tmp_path / "clone" / ".." / "clone" / "var", tmp_path / "link" / "var"]
    assert {dev_cluster_dir(path, as_root=True) for path in spellings} == {
        dev_cluster_dir(state, as_root=True)
    }
