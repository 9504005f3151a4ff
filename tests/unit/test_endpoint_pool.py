from engram_voice.realtime.endpoints import EndpointPool


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _pool(clock: _Clock) -> EndpointPool:
    return EndpointPool(
        ("https://a.example", "https://b.example"),
        failure_threshold=2,
        cooldown_seconds=30,
        clock=clock,
    )


def test_endpoints_are_tried_in_priority_order() -> None:
    """With everything healthy the configured order is kept."""
    pool = _pool(_Clock())
    assert [e.host for e in pool.candidates()] == ["a.example", "b.example"]


def test_an_endpoint_that_keeps_failing_rests_then_returns() -> None:
    """After enough consecutive failures an endpoint moves last until its cooldown ends."""
    clock = _Clock()
    pool = _pool(clock)
    first = pool.candidates()[0]
    pool.record_failure(first, "http_500")
    assert pool.candidates()[0] is first
    pool.record_failure(first, "timeout")
    assert [e.host for e in pool.candidates()] == ["b.example", "a.example"]
    assert pool.healthy_count() == 1
    clock.now += 31
    assert pool.candidates()[0] is first


def test_success_resets_the_failure_streak() -> None:
    """A success in between failures keeps the endpoint healthy."""
    pool = _pool(_Clock())
    first = pool.candidates()[0]
    pool.record_failure(first, "http_500")
    pool.record_success(first, 12.5)
    pool.record_failure(first, "http_500")
    assert pool.candidates()[0] is first
    described = pool.describe()[0]
    assert described["successes"] == 1
    assert described["failures"] == 2
    assert described["last_latency_ms"] == 12.5


def test_calls_url_carries_the_webrtc_filter() -> None:
    """The browser's SDP URL is the GA calls path with webrtcfilter=on when filtering."""
    endpoint = _pool(_Clock()).candidates()[0]
    assert endpoint.calls_url(webrtc_filter=True) == (
        "https://a.example/openai/v1/realtime/calls?webrtcfilter=on"
    )
    assert endpoint.calls_url(webrtc_filter=False).endswith("/realtime/calls")
