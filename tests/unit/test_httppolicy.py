import email.utils
import random

import pytest

from engram_voice.httppolicy import MAX_RETRY_AFTER_SECONDS, is_transient, parse_retry_after
from engram_voice.realtime.upstream import _retry_after as upstream_retry_after

NOW = 1_800_000_000.0


def _date(offset: float) -> str:
    return email.utils.formatdate(NOW + offset, usegmt=True)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
def test_timeouts_throttling_and_server_errors_are_transient(status):
    """408, 429 and every 5xx are worth another try."""
    assert is_transient(status)


@pytest.mark.parametrize("status", [200, 201, 301, 400, 401, 403, 404, 409, 413, 422, 499])
def test_other_statuses_are_not_transient(status):
    """Success, redirects and every other 4xx are final."""
    assert not is_transient(status)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("86400", 86_400.0),
        ("86401", MAX_RETRY_AFTER_SECONDS),
        ("9" * 400, MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_delay_seconds_are_read_and_capped(value, expected):
    """The delay-seconds form gives that many seconds, capped at one day."""
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_date(30), 30.0),
        (_date(0), 0.0),
        (_date(-3600), 0.0),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 0.0),
        ("Sunday, 06-Nov-94 08:49:37 GMT", 0.0),
        ("Sun Nov  6 08:49:37 1994", 0.0),
        (_date(10 * 86_400), MAX_RETRY_AFTER_SECONDS),
        ("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER_SECONDS),
    ],
)
def test_http_dates_give_the_seconds_until_then(value, expected):
    """An HTTP-date (all three RFC 9110 forms) gives the time until it; a past date is 0."""
    assert parse_retry_after(value, now=NOW) == expected


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "  ",
        "-1",
        "-0.5",
        "+5",
        "1e3",
        "inf",
        "nan",
        "0x10",
        "1_000",
        ".",
        "soon",
        "Mon, 32 Foo 2020",
        "Wed, 21 Oct 2015 25:61:00 GMT",
        "\x00",
        "5 seconds",
    ],
)
def test_garbage_and_negative_values_say_nothing(value):
    """Anything that is neither form (negative numbers included) means no hint, not an error."""
    assert parse_retry_after(value, now=NOW) is None


def _odd_values() -> list[str]:
    rng = random.Random(9)  # fixed seed: the same 300 odd header values every run
    alphabet = "0123456789 .,:+-eE;GMTSunNovOct\x00\u00e9\t"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(300)]


@pytest.mark.parametrize("value", _odd_values())
def test_any_text_gives_none_or_a_bounded_delay(value):
    """Whatever a server sends, the answer is None or a delay within 0 .. one day."""
    seconds = parse_retry_after(value, now=NOW)
    assert seconds is None or 0.0 <= seconds <= MAX_RETRY_AFTER_SECONDS


@pytest.mark.parametrize("exponent", range(31))
def test_every_integer_delay_is_honoured_up_to_the_cap(exponent):
    """Every non-negative integer is that many seconds, up to the cap."""
    for seconds in (10**exponent - 1, 10**exponent, 3 * 10**exponent):
        expected = min(float(seconds), MAX_RETRY_AFTER_SECONDS)
        assert parse_retry_after(str(seconds), now=NOW) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("9", 9),
        ("0.2", 1),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86_400),
        ("Sun, 06 Nov 1994 08:49:37 GMT", 1),
        ("-3", None),
        ("soon", None),
    ],
)
def test_the_upstream_minter_reads_both_forms_through_the_shared_policy(header, expected):
    """Azure's Retry-After reaches the caller as whole seconds (at least 1), dates included."""
    assert upstream_retry_after({"Retry-After": header}) == expected
