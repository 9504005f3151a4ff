"""Azure OpenAI calls: the call id read from Location, every refused status mapped."""

from __future__ import annotations

import pytest

from engram_voice.errors import (
    UpstreamAuthError,
    UpstreamRejectedError,
    UpstreamThrottledError,
    UpstreamUnavailableError,
    ValidationError,
)
from engram_voice.realtime.calls.azure_openai import _call_error, _call_id


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
