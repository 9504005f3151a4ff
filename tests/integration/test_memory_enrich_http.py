"""The enrichment path end to end: service and Zep stand-in as separate processes."""

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from zep_cloud.client import AsyncZep
from zep_python.base_client import AsyncBaseClient
from zep_python.core.api_error import ApiError

from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner
from tests.conftest import Emulator
from tests.support.memory_service import memory_service
from tests.support.polling import async_poll_until
from tests.support.servers import ServiceProcess, free_port, run_command

ZEP_KEY = "zep-standin-key-0123456789"
TOKEN_SECRET = "t" * 64
SIGNER = MemoryTokenSigner([("k1", Secret(TOKEN_SECRET))])


class Zep:
    """The Zep stand-in process, read through the SDK of the API the service speaks."""

    api = "v2"
    """``ZEP_API`` of the services under test (and so how :meth:`contents` reads)."""

    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.process = ServiceProcess(
            ["zep-standin"],
            {"ZEP_STANDIN_API_KEY": ZEP_KEY, "ZEP_STANDIN_DB": str(tmp / "zep.sqlite3")},
            log_path=tmp / "zep.log",
        )
        if port is not None:
            self.process.port = port

    @property
    def url(self) -> str:
        """Return the stand-in's base URL."""
        return self.process.base_url

    def fault(self, **plan: object) -> None:
        """Inject (or clear) a fault."""
        httpx.post(f"{self.url}/_standin/faults", json=plan, timeout=5).raise_for_status()

    def state(self) -> dict[str, object]:
        """Return the stand-in's counters."""
        answer: dict[str, object] = httpx.get(f"{self.url}/_standin/state", timeout=5).json()
        return answer

    async def contents(self, session_id: str) -> list[str]:
        """Return the contents stored for a session, in order (empty when unknown)."""
        if self.api == "v4":
            return await self._contents_v4(session_id)
        client = AsyncBaseClient(base_url=f"{self.url}/api/v2", api_key=ZEP_KEY, timeout=5)
        try:
            memory = await client.memory.get(session_id)
        except ApiError as exc:
            if exc.status_code == 404:
                return []
            raise
        return [m.content for m in memory.messages or []]

    async def _contents_v4(self, session_id: str) -> list[str]:
        client = AsyncZep(api_key=ZEP_KEY, base_url=f"{self.url}/api/v4", max_retries=0)
        contents: list[str] = []
        threads = await client.thread.list(page_size=1000)  # every user's: find ours by metadata
        for thread in threads.items or []:
            pager = await client.thread.list_messages(str(thread.uuid_), page_size=1000)
            contents.extend(
                [
                    message.content or ""
                    async for message in pager
                    if (message.metadata or {}).get("session_id") == session_id
                ]
            )
        return contents


@pytest.fixture(name="zep")
def fixture_zep(tmp_path: Path) -> Iterator[Zep]:
    """Run the Zep stand-in as its own process (not started yet)."""
    zep = Zep(tmp_path)
    yield zep
    zep.process.stop()


@pytest.fixture(name="make_service")
def fixture_make_service(
    tmp_path: Path, emulator: Emulator
) -> Iterator[Callable[..., ServiceProcess]]:
    """Return a factory of service processes (``engram-voice serve``) sharing one queue file."""
    started: list[ServiceProcess] = []

    def make(zep_url: str, **extra: str) -> ServiceProcess:
        env = {
            "AUTH_MODE": "none",
            "AZURE_OPENAI_ENDPOINTS": emulator.url,
            "AZURE_OPENAI_API_KEY": emulator.keys[0],
            "MEMORY_TOKEN_KEYS": f"k1:{TOKEN_SECRET}",
            "MEMORY_SQLITE_PATH": str(tmp_path / "queue.sqlite3"),
            "ZEP_API": "v2",
            "ZEP_API_URL": zep_url,
            "ZEP_API_KEY": ZEP_KEY,
            "ZEP_TIMEOUT_SECONDS": "2",
            "MEMORY_POLL_SECONDS": "0.1",
            "MEMORY_LEASE_SECONDS": "2",
            "MEMORY_BACKOFF_BASE_SECONDS": "0.2",
            "MEMORY_BACKOFF_MAX_SECONDS": "0.5",
            "MEMORY_RETRY_WAIT_INITIAL_SECONDS": "0.05",
            "MEMORY_RETRY_WAIT_MAX_SECONDS": "0.2",
            "MEMORY_CIRCUIT_COOLDOWN_SECONDS": "0.5",
            "LOG_FORMAT": "json",
            **extra,
        }
        process = memory_service(env, tmp_path / f"service-{len(started)}.log").start()
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


def _turns(session: str, start: int, count: int) -> list[dict[str, str]]:
    return [
        {
            "id": f"{session}-m{i:04d}",
            "role": "user" if i % 2 == 0 else "assistant",
            "text": f"{session} turn {i}",
        }
        for i in range(start, start + count)
    ]


def _expected(session: str, count: int) -> list[str]:
    return [f"{session} turn {i}" for i in range(count)]


def _token(session: str, user: str = "alice") -> str:
    return SIGNER.issue(session_id=session, user_id=user, agent="elena").token


async def _post(client: httpx.AsyncClient, session: str, turns, *, token: str | None = None):
    return await client.post(
        "/memory/enrich",
        json={"session_id": session, "messages": turns},
        headers={"Authorization": f"Bearer {token or _token(session)}"},
    )


async def _wait_delivered(zep: Zep, expected: dict[str, list[str]], within: float = 40) -> None:
    got: dict[str, list[str]] = {}

    async def delivered() -> bool:
        got.update({s: await zep.contents(s) for s in expected})
        return all(len(got[s]) >= len(v) for s, v in expected.items())

    await async_poll_until(delivered, timeout=within, interval=0.1, what="delivery")
    assert got == expected


async def test_enrich_accepts_while_zep_is_down_and_delivers_once_it_returns(
    tmp_path, make_service
):
    """With Zep down posts get 202 and minting works; when Zep returns each turn arrives once."""
    port = free_port()
    service = make_service(f"http://127.0.0.1:{port}")
    sessions = [f"vs_down{i}" for i in range(3)]
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        for start in (0, 5):
            answers = await asyncio.gather(
                *(_post(client, s, _turns(s, start, 5)) for s in sessions)
            )
            assert [a.status_code for a in answers] == [202, 202, 202]
        status = (await client.get("/status")).json()["memory"]
        assert status["queue"]["depth"] == 30
        minted = await client.post("/realtime/sessions", json={"agent": "elena"})
        assert minted.status_code == 201, "minting must not depend on Zep"
        assert (await client.get("/readyz")).status_code == 200
    zep = Zep(tmp_path, port=port)
    zep.process.start()
    try:
        await _wait_delivered(zep, {s: _expected(s, 10) for s in sessions})
    finally:
        zep.process.stop()


@pytest.mark.parametrize("api", ["v4", "v2"])
async def test_kill_9_after_a_burst_loses_and_duplicates_nothing(zep, make_service, api):
    """Every turn acknowledged before a SIGKILL is delivered after restart, none twice."""
    zep.api = api
    zep.process.start()
    zep.fault(mode="none", latency_ms=50)
    service = make_service(zep.url, ZEP_API=api)
    sessions = [f"vs_kill{i}" for i in range(10)]
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:

        async def conversation(session: str) -> list[httpx.Response]:
            return [
                await _post(client, session, _turns(session, start, 10)) for start in (0, 10, 20)
            ]

        answers = [a for batch in await asyncio.gather(*map(conversation, sessions)) for a in batch]
    assert all(a.status_code == 202 for a in answers)
    assert sum(a.json()["accepted"] for a in answers) == 300
    service.kill()
    zep.fault(clear=True)
    make_service(zep.url, ZEP_API=api)
    await _wait_delivered(zep, {s: _expected(s, 30) for s in sessions})


async def test_a_batch_posted_three_times_is_stored_and_delivered_once(zep, make_service):
    """Browser retries of the same batch are reported as duplicates and delivered once."""
    zep.process.start()
    service = make_service(zep.url)
    turns = _turns("vs_retry", 0, 4)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        answers = [(await _post(client, "vs_retry", turns)) for _ in range(3)]
    assert [a.status_code for a in answers] == [202, 202, 202]
    assert [a.json() for a in answers] == [
        {"accepted": 4, "duplicates": 0},
        {"accepted": 0, "duplicates": 4},
        {"accepted": 0, "duplicates": 4},
    ]
    await _wait_delivered(zep, {"vs_retry": _expected("vs_retry", 4)})


async def test_a_rejected_batch_is_dead_lettered_and_replays_after_the_fix(zep, make_service):
    """Zep's 400 puts the batch in dead letters with the reason; replay then delivers it."""
    zep.process.start()
    zep.fault(mode="reject")
    service = make_service(zep.url)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        assert (await _post(client, "vs_dead", _turns("vs_dead", 0, 3))).status_code == 202

        async def dead_letters() -> int:
            return int((await client.get("/status")).json()["memory"]["queue"]["dead_letters"])

        await async_poll_until(dead_letters, timeout=30, interval=0.1, what="a dead letter")
    env = {"MEMORY_SQLITE_PATH": service.env["MEMORY_SQLITE_PATH"]}
    listed = run_command(["memory", "dead-letters", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    letters = [json.loads(line) for line in listed.stdout.splitlines()]
    assert len(letters) == 1
    assert letters[0]["session_id"] == "vs_dead"
    assert "400" in letters[0]["reason"]
    assert await zep.contents("vs_dead") == []
    zep.fault(clear=True)
    replayed = run_command(["memory", "dead-letters", "replay", str(letters[0]["id"])], env)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 3 turns" in replayed.stdout
    await _wait_delivered(zep, {"vs_dead": _expected("vs_dead", 3)})


async def test_tokens_sessions_and_limits_get_clear_answers(zep, make_service):
    """Wrong session 403; expired, forged or missing token 401; limits 413/400; beacon 202."""
    zep.process.start()
    service = make_service(zep.url)
    turns = _turns("vs_a", 0, 1)
    expired = jwt.encode(
        {"sid": "vs_a", "sub": "alice", "agt": "elena", "aud": "engram-voice/memory", "exp": 1},
        TOKEN_SECRET,
        algorithm="HS256",
        headers={"kid": "k1"},
    )
    forged = MemoryTokenSigner([("k1", Secret("f" * 64))]).issue(
        session_id="vs_a", user_id="alice", agent="elena"
    )
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        other = await _post(client, "vs_a", turns, token=_token("vs_b"))
        assert (other.status_code, other.json()["code"]) == (403, "forbidden")
        assert other.headers["content-type"].startswith("application/problem+json")
        for token in (expired, forged.token):
            assert (await _post(client, "vs_a", turns, token=token)).status_code == 401
        missing = await client.post(
            "/memory/enrich", json={"session_id": "vs_a", "messages": turns}
        )
        assert missing.status_code == 401
        too_many = await _post(client, "vs_a", _turns("vs_a", 0, 101))
        assert (too_many.status_code, too_many.json()["errors"][0]["field"]) == (413, "messages")
        long_text = [{"id": "m", "role": "user", "text": "x" * 10_001}]
        assert (await _post(client, "vs_a", long_text)).status_code == 413
        bad_id = await _post(client, "vs_a", [{"id": "a b", "role": "user", "text": "x"}])
        assert (bad_id.status_code, bad_id.json()["errors"][0]["field"]) == (400, "messages[0].id")
        beacon = await client.post(
            "/memory/enrich",
            content=json.dumps({"session_id": "vs_a", "messages": turns, "token": _token("vs_a")}),
            headers={"Content-Type": "text/plain;charset=UTF-8"},
        )
        assert (beacon.status_code, beacon.json()) == (202, {"accepted": 1, "duplicates": 0})
    assert _token("vs_a") not in service.read_log()
    await _wait_delivered(zep, {"vs_a": _expected("vs_a", 1)})


async def test_graceful_shutdown_during_delivery_loses_nothing(zep, make_service):
    """SIGTERM while delivering finishes in-flight batches; a restart delivers the rest once."""
    zep.process.start()
    zep.fault(mode="none", latency_ms=200)
    service = make_service(zep.url)
    sessions = [f"vs_term{i}" for i in range(8)]
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        answers = await asyncio.gather(*(_post(client, s, _turns(s, 0, 40)) for s in sessions))
    assert all(a.status_code == 202 for a in answers)
    await async_poll_until(
        lambda: zep.state()["calls"].get("memory.add"),  # type: ignore[union-attr]
        timeout=20,
        what="delivery starting",
    )
    assert service.stop() in (0, -15)  # uvicorn re-raises SIGTERM after a graceful shutdown
    log = service.read_log()
    assert "memory.stopped" in log
    assert "memory.stop_timeout" not in log
    zep.fault(mode="none", latency_ms=0)
    make_service(zep.url)
    await _wait_delivered(zep, {s: _expected(s, 40) for s in sessions})


@pytest.mark.parametrize("api", ["v4", "v2"])
async def test_kill_9_after_zep_stored_a_batch_stores_nothing_twice(zep, make_service, api):
    """A SIGKILL while Zep holds the answer to a batch it stored duplicates no turn."""
    zep.api = api
    zep.process.start()
    zep.fault(mode="store_then_timeout", hold_ms=60_000)
    env = {"ZEP_API": api, "ZEP_TIMEOUT_SECONDS": "30"}
    service = make_service(zep.url, **env)
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        assert (await _post(client, "vs_held", _turns("vs_held", 0, 5))).status_code == 202

    def stored_and_held() -> bool:
        faults: dict[str, int] = zep.state()["faults"]  # type: ignore[assignment]
        return faults["injected"] >= 1

    await async_poll_until(stored_and_held, timeout=20, what="Zep storing the batch")
    service.kill()
    zep.fault(clear=True)
    restarted = make_service(zep.url, **env)
    async with httpx.AsyncClient(base_url=restarted.base_url, timeout=10) as client:
        assert (await _post(client, "vs_held", _turns("vs_held", 5, 3))).status_code == 202
    await _wait_delivered(zep, {"vs_held": _expected("vs_held", 8)})


@pytest.mark.parametrize("api", ["v4", "v2"])
async def test_kill_9_during_a_slow_delivery_resumes_after_the_short_lease(zep, make_service, api):
    """A crash mid-call leaves leased sessions; a restart delivers them once the short lease ends.

    The lease (3 s) is shorter than one Zep call (4 s): the live worker must renew it by
    heartbeat while the call runs, and after SIGKILL the new process resumes within seconds
    (it used to wait out a 120 s lease), each turn stored once.
    """
    zep.api = api
    zep.process.start()
    zep.fault(mode="none", latency_ms=4000)
    lease = {"MEMORY_LEASE_SECONDS": "3", "ZEP_TIMEOUT_SECONDS": "10", "ZEP_API": api}
    service = make_service(zep.url, **lease)
    sessions = [f"vs_slow{i}" for i in range(4)]
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        answers = await asyncio.gather(*(_post(client, s, _turns(s, 0, 5)) for s in sessions))
        assert all(a.status_code == 202 for a in answers)

        async def delivering() -> bool:
            worker = (await client.get("/status")).json()["memory"]["worker"]
            return worker["in_flight_sessions"] >= 1

        await async_poll_until(delivering, timeout=20, what="delivery starting")
    service.kill()
    zep.fault(mode="none", latency_ms=0)
    make_service(zep.url, **lease)
    await _wait_delivered(zep, {s: _expected(s, 5) for s in sessions}, within=20)


async def test_a_locked_queue_file_keeps_status_and_readiness_prompt(zep, make_service):
    """Under another process's write lock /status and /readyz answer at once, enrich 503s.

    The in-process worker is blocked on the lock meanwhile (it used to hold up /status for
    its whole busy timeout); once the lock is gone every turn is delivered.
    """
    zep.process.start()
    service = make_service(zep.url, MEMORY_STORE_TIMEOUT_SECONDS="1")
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        assert (await _post(client, "vs_lock", _turns("vs_lock", 0, 3))).status_code == 202
        await _wait_delivered(zep, {"vs_lock": _expected("vs_lock", 3)})
        holder = sqlite3.connect(service.env["MEMORY_SQLITE_PATH"], isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")  # as `sqlite3 <file>` with BEGIN EXCLUSIVE; would
            holder.execute("UPDATE sessions SET attempts=attempts")
            refused = await asyncio.wait_for(_post(client, "vs_lock", _turns("vs_lock", 3, 2)), 5)
            for _ in range(5):  # the worker is blocked on the lock meanwhile, status is not
                status = await client.get("/status", timeout=2)
                assert status.status_code == 200
                assert status.json()["memory"]["queue"]["available"] is True
                assert (await client.get("/readyz", timeout=2)).status_code == 200
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (refused.status_code, refused.json()["code"]) == (503, "storage_unavailable")
        assert (await _post(client, "vs_lock", _turns("vs_lock", 3, 2))).status_code == 202
    await _wait_delivered(zep, {"vs_lock": _expected("vs_lock", 5)})


async def test_bodies_that_cannot_be_stored_or_trusted_are_refused_and_never_reach_zep(
    zep, make_service
):
    """Latin-1 beacons, NUL text and contradicting tokens get 400/401; only valid turns arrive."""
    zep.process.start()
    service = make_service(zep.url)
    session = "vs_refused"
    valid = {"session_id": session, "messages": _turns(session, 0, 1)}
    beacon = {"content-type": "text/plain;charset=UTF-8"}
    latin1 = json.dumps(
        {**valid, "messages": [{"id": "m-latin1", "role": "user", "text": "café"}]},
        ensure_ascii=False,
        separators=(",", ":"),
    ).replace('"messages"', f'"token":"{_token(session)}","messages"')
    async with httpx.AsyncClient(base_url=service.base_url, timeout=10) as client:
        not_utf8 = await client.post(
            "/memory/enrich", content=latin1.encode("latin-1"), headers=beacon
        )
        nul = await client.post(
            "/memory/enrich",
            json={**valid, "messages": [{"id": "m-nul", "role": "user", "text": "a\u0000b"}]},
            headers={"Authorization": f"Bearer {_token(session)}"},
        )
        contradicting = await client.post(
            "/memory/enrich",
            json={**valid, "token": _token("vs_other")},
            headers={"Authorization": f"Bearer {_token(session)}"},
        )
        accepted = await _post(client, session, valid["messages"])
    assert (not_utf8.status_code, not_utf8.json()["errors"][0]["field"]) == (400, "body")
    assert (nul.status_code, nul.json()["errors"][0]["field"]) == (400, "messages[0].text")
    assert (contradicting.status_code, contradicting.json()["errors"][0]["field"]) == (401, "token")
    assert accepted.status_code == 202
    await _wait_delivered(zep, {session: _expected(session, 1)})
