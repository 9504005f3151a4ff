import asyncio

import pytest

from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.faults import FaultInjector, Target
from engram_voice.emulator.schemas import FaultRequest
from tests.support.polling import async_poll_until


class RecordingSleep:
    """Stands in for asyncio.sleep and records the delays it was asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        """Record ``seconds`` instead of sleeping."""
        self.delays.append(seconds)


@pytest.fixture(name="sleep")
def fixture_sleep() -> RecordingSleep:
    """Provide a sleep that records instead of waiting."""
    return RecordingSleep()


@pytest.fixture(name="faults")
def fixture_faults(sleep: RecordingSleep) -> FaultInjector:
    """Provide a fault injector whose latency goes to the recording sleep."""
    return FaultInjector(sleep=sleep)


def outcomes(faults: FaultInjector, target: Target = "client_secrets", n: int = 4) -> list[int]:
    """Return the status each of ``n`` requests to ``target`` would get (200 = no fault)."""
    statuses = []
    for _ in range(n):
        try:
            faults.fail(target)
            statuses.append(200)
        except AzureApiError as exc:
            statuses.append(exc.status)
    return statuses


def test_a_counted_status_fails_that_many_requests(faults):
    """``{"status": 500, "count": 2}`` fails the next two requests, then they succeed."""
    faults.apply(FaultRequest(status=500, count=2))

    assert outcomes(faults) == [500, 500, 200, 200]


def test_a_status_without_count_persists_until_cleared(faults):
    """A status without a count fails every request until the faults are cleared."""
    faults.apply(FaultRequest(status=503))
    before = outcomes(faults, n=3)
    faults.apply(FaultRequest(clear=True))

    assert before == [503, 503, 503]
    assert outcomes(faults, n=1) == [200]


def test_faults_apply_per_target(faults):
    """A fault on ``calls`` leaves ``client_secrets`` alone."""
    faults.apply(FaultRequest(target="calls", status=502))

    assert outcomes(faults, "client_secrets", 1) == [200]
    assert outcomes(faults, "calls", 1) == [502]


def test_injected_errors_look_like_azure(faults):
    """An injected 429 carries Retry-After and Azure's error body shape."""
    faults.apply(FaultRequest(status=429, count=1, retry_after=7))

    with pytest.raises(AzureApiError) as caught:
        faults.fail("client_secrets")

    error = caught.value
    assert error.headers == {"Retry-After": "7"}
    assert error.body()["error"]["code"] == "429"
    assert "retry after 7 seconds" in error.message


async def test_latency_adds_to_the_configured_latency(faults, sleep):
    """Injected latency is added to the emulator's fixed latency before answering."""
    faults.apply(FaultRequest(latency_ms=300))

    await faults.delay("client_secrets", base_latency_ms=200)
    await faults.delay("calls")

    assert sleep.delays == [0.5]


async def test_a_hang_holds_requests_until_cleared(faults):
    """With ``hang`` set a request waits; clearing the faults releases it."""
    faults.apply(FaultRequest(hang=True))
    request = asyncio.create_task(faults.delay("client_secrets"))

    await async_poll_until(lambda: faults.hung == 1, timeout=5, what="the request to hang")
    assert not request.done()
    assert faults.describe()["hung_requests"] == 1
    faults.apply(FaultRequest(clear=True))

    await asyncio.wait_for(request, 5)
    assert faults.hung == 0


async def test_switching_hang_off_releases_waiting_requests(faults):
    """``{"hang": false}`` releases hung requests without touching other faults."""
    faults.apply(FaultRequest(hang=True, status=500))
    request = asyncio.create_task(faults.delay("client_secrets"))
    await async_poll_until(lambda: faults.hung == 1, timeout=5, what="the request to hang")

    faults.apply(FaultRequest(hang=False))

    await asyncio.wait_for(request, 5)
    assert faults.describe()["client_secrets"]["status"] == 500


@pytest.mark.parametrize("latency_ms", [None, 0, 1500])
def test_a_late_sideband_fault_holds_its_bound_for_counted_upgrades(
    faults: FaultInjector, latency_ms: int | None
) -> None:
    """``late`` is taken once per counted upgrade, with its bound; clearing removes it."""
    if latency_ms is None:
        change = FaultRequest(target="sideband", mode="late", count=2)
    else:
        change = FaultRequest(target="sideband", mode="late", count=2, latency_ms=latency_ms)
    faults.apply(change)
    assert faults.describe()["sideband"] == {
        "mode": "late",
        "remaining": 2,
        "latency_ms": latency_ms or 0,
    }
    assert not faults.take_sideband("drop")
    assert [faults.take_sideband("late") for _ in range(3)] == [True, True, False]
    faults.apply(FaultRequest(target="sideband", mode="late", latency_ms=5))
    faults.clear()
    assert faults.describe()["sideband"] == {"mode": None, "remaining": None, "latency_ms": 0}


def test_late_is_no_voice_live_fault(faults: FaultInjector) -> None:
    """The sideband's ``late`` mode is refused for the Voice Live target."""
    with pytest.raises(AzureApiError):
        faults.apply(FaultRequest(target="voicelive", mode="late"))
