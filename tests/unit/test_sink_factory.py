"""The one sink factory and the ``ZEP_API`` setting it reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from engram_voice.envreader import EnvReader
from engram_voice.memory.postgres_sink_state import PostgresSinkState
from engram_voice.memory.settings import MemorySettings
from engram_voice.memory.sinks import build_sink, build_sink_state, sink_configured
from engram_voice.memory.sqlite_sink_state import SqliteSinkState


def _settings(tmp: Path, **env: str) -> tuple[MemorySettings, list[str]]:
    reader = EnvReader({"MEMORY_SQLITE_PATH": str(tmp / "q.sqlite3"), **env})
    return MemorySettings.from_env(reader), reader.problems


ZEP = {"ZEP_API_URL": "http://127.0.0.1:9", "ZEP_API_KEY": "z" * 32}


@pytest.mark.parametrize(
    ("env", "kind", "max_chars"),
    [
        ({}, "zep-v4", 4096),
        ({"ZEP_API": "v4"}, "zep-v4", 4096),
        ({"ZEP_API": "V2"}, "zep-v2", 2500),
        ({"ZEP_API": "v4", "ZEP_MAX_MESSAGE_CHARS": "2000"}, "zep-v4", 2000),
    ],
)
async def test_the_factory_builds_the_configured_sink(tmp_path, env, kind, max_chars):
    """ZEP_API picks the sink (v4 by default), with that API's content limit by default."""
    settings, problems = _settings(tmp_path, **ZEP, **env)
    assert problems == []
    state = build_sink_state(settings)
    assert (state is None) == (kind == "zep-v2")
    sink = build_sink(settings, state)
    assert sink is not None
    try:
        assert (sink.kind, sink.max_chars, sink.batch_limit) == (kind, max_chars, 30)
    finally:
        await sink.aclose()


@pytest.mark.parametrize(
    ("env", "store"),
    [
        ({}, SqliteSinkState),
        ({"MEMORY_QUEUE": "sqlite"}, SqliteSinkState),
        (
            {
                "MEMORY_QUEUE": "postgres",
                "MEMORY_POSTGRES_HOST": "127.0.0.1",
                "MEMORY_POSTGRES_USER": "engram",
                "MEMORY_POSTGRES_PASSWORD": "pw-not-logged",
            },
            PostgresSinkState,
        ),
    ],
)
def test_the_v4_sink_state_lives_where_the_queue_lives(tmp_path, env, store):
    """The v4 sink's state store is the queue backend's: SQLite file, or the shared database."""
    settings, problems = _settings(tmp_path, **ZEP, **env)
    assert problems == []
    state = build_sink_state(settings)
    assert type(state) is store
    assert "pw-not-logged" not in repr(state)


def test_no_url_means_no_sink(tmp_path):
    """Without ZEP_API_URL nothing is built and turns stay queued."""
    settings, _ = _settings(tmp_path)
    assert not sink_configured(settings)
    assert build_sink_state(settings) is None
    assert build_sink(settings, None) is None


def test_the_v4_sink_needs_its_state_store(tmp_path):
    """The v4 sink cannot be built without somewhere to keep Zep's UUIDs."""
    settings, _ = _settings(tmp_path, **ZEP)
    with pytest.raises(ValueError, match="state store"):
        build_sink(settings, None)


@pytest.mark.parametrize(
    ("name", "value"),
    [("ZEP_API", "v3"), ("ZEP_API", ""), ("ZEP_MAX_MESSAGE_CHARS", "999")],
)
def test_bad_sink_settings_are_named(tmp_path, name, value):
    """An unknown API or a content limit below 1,000 is a configuration problem naming it."""
    _, problems = _settings(tmp_path, **ZEP, **{name: value})
    if value == "":
        assert problems == []  # empty means unset: the default
    else:
        assert any(name in problem for problem in problems)
