"""Recall's switches and wiring: catalog opt-out, MEMORY_RECALL, ZEP_API, the worker's hook."""

from pathlib import Path

import pytest

from engram_voice.agents import load_catalog
from engram_voice.credentials.secret import Secret
from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError
from engram_voice.memory import MemorySettings, build_memory_runtime
from engram_voice.memory.recall import RecallSettings, build_reader, build_recall
from engram_voice.memory.schemas import EnrichMessage
from engram_voice.settings import Settings
from tests.support.clock import FakeClock
from tests.support.memory import FakeSink
from tests.support.recall import FakeReader

AGENT = 'name = "{name}"\ninstructions = "You are {name}."\nvoice = "marin"\n'


def _catalog(tmp_path: Path, body: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(body)
    return str(path)


def _memory(**env: str) -> MemorySettings:
    reader = EnvReader(env)
    settings = MemorySettings.from_env(reader)
    reader.raise_if_invalid()
    return settings


def test_every_shipped_agent_recalls_memory_by_default():
    """Elena, Marcus and Sage start their sessions with the caller's memory."""
    assert all(agent.memory_recall for agent in load_catalog().all())


@pytest.mark.parametrize(
    ("defaults", "own", "expected"),
    [
        ("", "", True),
        ("", "memory_recall = false\n", False),
        ("[defaults]\nmemory_recall = false\n", "", False),
        ("[defaults]\nmemory_recall = false\n", "memory_recall = true\n", True),
    ],
)
def test_an_agent_opts_out_in_the_catalog_or_inherits_the_default(
    tmp_path, defaults, own, expected
):
    """memory_recall per agent overrides [defaults]; absent everywhere it is on."""
    body = f"{defaults}[agents.a]\n{AGENT.format(name='A')}{own}"
    assert load_catalog(_catalog(tmp_path, body)).get("a").memory_recall is expected


def test_a_non_boolean_switch_stops_loading_with_the_file_named(tmp_path):
    """memory_recall = "no" is refused with one message naming the file."""
    body = f'[agents.a]\n{AGENT.format(name="A")}memory_recall = "no"\n'
    with pytest.raises(ConfigurationError, match=r"AGENTS_FILE=.*memory_recall"):
        load_catalog(_catalog(tmp_path, body))


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"MEMORY_RECALL": "maybe"}, "MEMORY_RECALL"),
        ({"MEMORY_RECALL_BUDGET_MS": "-1"}, "MEMORY_RECALL_BUDGET_MS"),
        ({"MEMORY_RECALL_MAX_CHARS": "10"}, "MEMORY_RECALL_MAX_CHARS"),
        ({"ZEP_API": "v3"}, "ZEP_API"),
    ],
)
def test_bad_recall_settings_stop_start_up_naming_the_variable(env, problem):
    """Each bad recall setting is reported by name at start-up."""
    base = {"MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}", "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9"}
    with pytest.raises(ConfigurationError, match=problem):
        Settings.from_env({**base, "AZURE_OPENAI_API_KEY": "x", **env})


def test_recall_is_off_without_zep_or_with_memory_recall_false():
    """No ZEP_API_URL, or MEMORY_RECALL=false: no recall at all (the setup never reads)."""
    assert build_recall(RecallSettings(), _memory()) is None
    zep = _memory(ZEP_API_URL="http://127.0.0.1:9", ZEP_API_KEY="k")
    assert build_recall(RecallSettings(enabled=False), zep) is None
    assert build_recall(RecallSettings(), zep) is not None


@pytest.mark.parametrize(("api", "kind"), [("v4", "zep-v4"), ("v2", "zep-v2"), (None, "zep-v4")])
async def test_zep_api_picks_the_reader(api, kind):
    """ZEP_API=v4 (the default) reads Zep Cloud through zep-cloud, v2 through zep-python."""
    env = {"ZEP_API_URL": "http://127.0.0.1:9", "ZEP_API_KEY": "secret-zep-key"}
    reader = build_reader(_memory(**env, **({"ZEP_API": api} if api else {})))
    assert reader is not None
    try:
        assert reader.describe() == {"kind": kind, "url": "http://127.0.0.1:9"}
        assert "secret-zep-key" not in repr(reader)
    finally:
        await reader.aclose()


async def test_the_worker_tells_recall_whose_turns_it_delivered(tmp_path):
    """After delivering a user's turns the worker calls its hook with that user's id."""
    runtime = build_memory_runtime(
        _memory(MEMORY_SQLITE_PATH=str(tmp_path / "q.sqlite3"), MEMORY_WORKER="off"),
        token_keys=[("k1", Secret("k" * 64))],
        sink=FakeSink(),
        clock=FakeClock(),
    )
    await runtime.start()
    try:
        assert runtime.worker is not None
        told: list[str] = []
        runtime.worker.on_delivered = told.append
        claims = runtime.verify(runtime.grant("vs_1", "alice", "elena")["token"])
        await runtime.accept(claims, [EnrichMessage(id="m1", role="user", text="hi")])
        await runtime.drain()
        assert told == ["alice"]
    finally:
        await runtime.stop()


async def test_recall_shares_the_workers_circuit(tmp_path):
    """Given the worker's breaker, recall opens and closes with it (Zep down for both)."""
    runtime = build_memory_runtime(
        _memory(MEMORY_SQLITE_PATH=str(tmp_path / "q.sqlite3"), MEMORY_WORKER="off"),
        sink=FakeSink(),
    )
    assert runtime.worker is not None
    zep = _memory(ZEP_API_URL="http://127.0.0.1:9", ZEP_API_KEY="k")
    recall = build_recall(
        RecallSettings(), zep, reader=FakeReader(), circuit=runtime.worker.circuit
    )
    assert recall is not None
    assert recall.circuit is runtime.worker.circuit
    await recall.aclose()
