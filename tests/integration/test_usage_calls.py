"""Usage of calls through the service over real HTTP: daily limits, /status, /metrics, the CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiortc import RTCSessionDescription

from engram_voice.services import Overrides
from tests.conftest import Emulator, ServiceFactory, service_env
from tests.support.calls import HeaderUsers, delete_call, emulator_call_ids, post_call
from tests.support.clock import FakeClock
from tests.support.polling import async_poll_until
from tests.support.realtime_client import RealtimeTestClient
from tests.support.servers import ServiceProcess, run_command

MIDNIGHT = datetime(2027, 3, 1, tzinfo=UTC).timestamp()


@pytest.fixture(name="browsers")
async def fixture_browsers() -> AsyncIterator[list[RealtimeTestClient]]:
    """Provide three aiortc peers that behave like browsers (closed afterwards)."""
    clients = [RealtimeTestClient() for _ in range(3)]
    yield clients
    for client in clients:
        await client.close()


async def open_call(url: str, browser: RealtimeTestClient, user: str = "alice") -> dict[str, Any]:
    """Set up a call through the service as ``user`` and apply its answer; return the body."""
    response = await post_call(url, await browser.offer(), user=user)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    await browser.pc.setRemoteDescription(
        RTCSessionDescription(sdp=body["sdp_answer"], type="answer")
    )
    return body


async def test_the_daily_calls_limit_answers_429_until_utc_midnight(
    emulator: Emulator, make_service: ServiceFactory, browsers: list[RealtimeTestClient]
) -> None:
    """Past USAGE_MAX_CALLS_PER_DAY a user gets 429 usage_limit_reached, Retry-After to midnight."""
    clock = FakeClock(MIDNIGHT - 75)
    env = service_env(emulator, USAGE_MAX_CALLS_PER_DAY="1")
    before = emulator_call_ids(emulator)  # by id: the emulator forgets its oldest ended calls
    with make_service(env, Overrides(authenticator=HeaderUsers(), usage_clock=clock)) as url:
        first = await open_call(url, browsers[0])
        assert (await delete_call(url, first["call_id"])).status_code == 204
        refused = await post_call(url, await browsers[1].offer())
        opened_upstream = len(emulator_call_ids(emulator) - before)
        clock.advance(75)
        await open_call(url, browsers[2])  # a new UTC day
    assert refused.status_code == 429
    assert refused.json()["code"] == "usage_limit_reached"
    assert refused.json()["limit"] == "calls"
    assert refused.headers["retry-after"] == "75"
    assert opened_upstream == 1  # the refused call never reached the upstream


async def test_the_minutes_limit_counts_a_live_call(
    emulator: Emulator, make_service: ServiceFactory, browsers: list[RealtimeTestClient]
) -> None:
    """A live call whose elapsed time reaches USAGE_MAX_MINUTES_PER_DAY blocks the next call."""
    clock = FakeClock(MIDNIGHT + 10)
    env = service_env(emulator, USAGE_MAX_MINUTES_PER_DAY="1")
    with make_service(env, Overrides(authenticator=HeaderUsers(), usage_clock=clock)) as url:
        await open_call(url, browsers[0])
        clock.advance(60)
        refused = await post_call(url, await browsers[1].offer())
        other = await open_call(url, browsers[2], user="bob")
    assert refused.status_code == 429
    assert refused.json()["limit"] == "minutes"
    assert int(refused.headers["retry-after"]) == 86_400 - 70
    assert other["call_id"]


async def test_a_call_is_metered_on_status_metrics_and_the_usage_command(
    emulator: Emulator, make_service: ServiceFactory, browsers: list[RealtimeTestClient]
) -> None:
    """After one call, /status, /metrics and `engram-voice usage` (durable storage) show it."""
    env = service_env(emulator)
    with make_service(env, Overrides(authenticator=HeaderUsers())) as url:
        body = await open_call(url, browsers[0], user="carol")
        assert (await delete_call(url, body["call_id"], user="carol")).status_code == 204
        async with httpx.AsyncClient(timeout=10) as http:
            status = (await http.get(f"{url}/status")).json()["usage"]
            metrics = (await http.get(f"{url}/metrics")).text
    assert status["today"]["calls"] >= 1
    assert status["store"]["backend"] == "sqlite"
    assert "carol" not in json.dumps(status)  # no per-user data
    assert 'engram_usage_calls_total{agent="elena",upstream="azure-openai"}' in metrics
    assert 'engram_usage_call_seconds_total{agent="elena",upstream="azure-openai"}' in metrics
    assert (Path(env["MEMORY_SQLITE_PATH"]).parent / "usage.sqlite3").exists()

    listed = run_command(["usage", "--user", "carol", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    (row,) = json.loads(listed.stdout)
    assert (row["user_id"], row["calls"]) == ("carol", 1)
    assert row["seconds"] >= 0
    table = run_command(["usage"], env)
    assert table.returncode == 0
    assert "carol" in table.stdout
    assert table.stdout.splitlines()[0].split()[:4] == ["day", "user", "calls", "minutes"]


async def _output_audio_tokens(url: str) -> float:
    """Return Elena's Azure OpenAI output audio tokens counted on /metrics so far."""
    async with httpx.AsyncClient(timeout=10) as http:
        metrics = (await http.get(f"{url}/metrics")).text
    prefix = 'engram_usage_tokens_total{agent="elena",kind="output_audio",upstream="azure-openai"}'
    line = next((x for x in metrics.splitlines() if x.startswith(prefix)), None)
    return float(line.split()[-1]) if line else 0.0


async def test_the_tokens_heard_on_the_sideband_are_metered_and_stored(
    emulator: Emulator, make_service: ServiceFactory, browsers: list[RealtimeTestClient]
) -> None:
    """Each response.done the service hears on an Azure OpenAI call's sideband is counted.

    The emulator's responses carry token usage; it reaches the counters by agent and
    upstream while the call runs, and the user's row of `engram-voice usage` afterwards.
    """
    env = service_env(emulator)
    with make_service(env, Overrides(authenticator=HeaderUsers())) as url:
        # The Prometheus registry is the test process's: count from this call's start.
        before = await _output_audio_tokens(url)
        body = await open_call(url, browsers[0], user="dora")
        await browsers[0].wait_connected()

        async def counted() -> bool:
            return await _output_audio_tokens(url) > before

        await async_poll_until(counted, timeout=30, what="this call's tokens on /metrics")
        assert (await delete_call(url, body["call_id"], user="dora")).status_code == 204
    (row,) = [r for r in _usage_rows(env) if r["user_id"] == "dora"]
    assert row["calls"] == 1
    assert row["tokens"]["output_audio"] > 0
    assert row["tokens"]["input_audio"] > 0


@pytest.mark.parametrize(
    ("args", "extra_env"),
    [
        (["usage", "--since", "2027-13-01"], {}),
        (["usage", "--since", "2027-02-02", "--until", "2027-02-01"], {}),
        (["usage"], {"USAGE_MAX_CALLS_PER_DAY": "-1"}),
        (["usage"], {"LOG_LEVEL": "loud"}),
    ],
)
def test_the_usage_command_exits_2_on_bad_arguments_or_configuration(
    tmp_path: Path, args: list[str], extra_env: dict[str, str]
) -> None:
    """A malformed day, an empty range or invalid configuration exits 2 with one message."""
    env = {"MEMORY_SQLITE_PATH": str(tmp_path / "q.db"), **extra_env}
    done = run_command(args, env)
    assert done.returncode == 2
    assert done.stderr.strip()
    assert done.stdout == ""


def _usage_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    """Return `engram-voice usage --json` rows (the operator's view of durable storage)."""
    done = run_command(["usage", "--json"], env)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows


async def test_a_started_call_is_durable_before_a_kill_9(
    emulator: Emulator, browsers: list[RealtimeTestClient], tmp_path: Path
) -> None:
    """A call's start is committed while the service runs, so kill -9 does not lose it."""
    env = service_env(emulator)
    service = ServiceProcess(["serve"], env, log_path=tmp_path / "service.log").start()
    try:
        response = await post_call(service.base_url, await browsers[0].offer())
        assert response.status_code == 201, response.text
        rows = await async_poll_until(
            lambda: [r for r in _usage_rows(env) if r["calls"] == 1],
            timeout=15,
            what="the call's start committed to the usage store",
        )
        service.kill()
        assert [(r["calls"], r["seconds"]) for r in _usage_rows(env)] == [(1, 0)]
        assert len(rows) == 1
    finally:
        service.kill()
