"""Azure OpenAI calls: the call id read from Location, every refused status mapped."""

from __future__ import annotations

import aiohttp
import msgspec
import pytest

from engram_voice.credentials import Secret, StaticKeySource
from engram_voice.errors import (
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamThrottledError,
    UpstreamUnavailableError,
    ValidationError,
)
from engram_voice.realtime.calls.azure_openai import _call_error, _call_id
from engram_voice.realtime.calls.factory import build_call_upstreams
from engram_voice.realtime.endpoints import EndpointPool
from engram_voice.realtime.upstream import UpstreamMinter
from engram_voice.settings import Settings


@pytest.mark.parametrize(
    ("location", "call_id"),
    [
        ("/openai/v1/realtime/calls/rtc_abc", "rtc_abc"),
        ("https://r.openai.azure.com/openai/v1/realtime/calls/rtc_abc", "rtc_abc"),
        ("https://r.openai.azure.com/openai/v1/realtime/calls/rtc_abc/", "rtc_abc"),
        ("https://r.openai.azure.com/v1/realtime/calls/rtc_abc?x=1", "rtc_abc"),
        ("/openai/v1/realtime/calls/", None),
        ("/openai/v1/realtime/calls", None),
        ("/somewhere/else/rtc_abc", None),
        ("", None),
        (None, None),
    ],
)
def test_the_call_id_is_the_last_segment_of_a_calls_location(
    location: str | None, call_id: str | None
) -> None:
    """Only a Location under ``/realtime/calls/`` names a call; anything else names none."""
    assert _call_id(location) == call_id


@pytest.mark.parametrize("status", range(400, 600))
def test_every_refused_call_status_maps_to_one_service_error(status: int) -> None:
    """400 is the offer's fault; 401/403 the key; 429 throttling; 408/5xx outage; else rejected."""
    error = _call_error(status, {"Retry-After": "3"}, "r.openai.azure.com", "vs_1")
    expected: type[Exception]
    if status == 400:
        expected = ValidationError
    elif status in {401, 403}:
        expected = UpstreamAuthError
    elif status == 429:
        expected = UpstreamThrottledError
    elif status == 408 or status >= 500:
        expected = UpstreamUnavailableError
    else:
        expected = UpstreamRejectedError
    assert type(error) is expected
    assert 400 <= error.status < 600
    if status == 429:
        assert error.retry_after == 3


async def test_azure_openai_serves_calls_only_when_it_has_endpoints(
    app_env: dict[str, str],
) -> None:
    """With endpoints the factory builds the azure-openai upstream; without, none."""
    realtime = Settings.from_env(app_env).realtime
    async with aiohttp.ClientSession() as session:
        source = StaticKeySource(Secret("never-sent"))
        pool = EndpointPool(realtime.endpoints, failure_threshold=1, cooldown_seconds=1)
        minter = UpstreamMinter(
            session=session,
            credentials=source,
            pool=pool,
            request_timeout=1,
            connect_timeout=1,
            deadline=1,
        )
        built = build_call_upstreams(realtime, session=session, minter=minter, credentials=source)
        unconfigured = msgspec.structs.replace(realtime, endpoints=())
        none = build_call_upstreams(
            unconfigured, session=session, minter=minter, credentials=source
        )
    assert list(built) == ["azure-openai"]
    assert none == {}
