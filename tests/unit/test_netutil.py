"""One loopback check: every setting and component judges a host the same way."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engram_voice.auth import AuthSettings
from engram_voice.emulator.loopback import loopback_candidates_only
from engram_voice.envreader import EnvReader
from engram_voice.netutil import is_loopback_host, public_origin
from engram_voice.realtime.settings import RealtimeSettings

HOSTS = [
    ("127.0.0.1", True),
    ("127.0.0.2", True),
    ("::1", True),
    ("[::1]", True),
    ("localhost", True),
    ("LOCALHOST", True),
    ("0.0.0.0", False),  # noqa: S104 - a host to judge, never bound
    ("::", False),
    ("10.0.0.4", False),
    ("engram.internal", False),
    ("abc.local", False),
    ("", False),
    (None, False),
]
IPS = [
    (host, loopback) for host, loopback in HOSTS if (host and host[0].isdigit()) or host == "::1"
]
SRC = Path(__file__).resolve().parents[2] / "src" / "engram_voice"


@pytest.mark.parametrize(("host", "loopback"), HOSTS)
def test_loopback_means_this_machine_only(host: str | None, loopback: bool) -> None:
    """Only localhost and loopback addresses (all of 127/8, ::1) count as loopback."""
    assert is_loopback_host(host) is loopback


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@pytest.mark.parametrize(("host", "loopback"), [(h, lb) for h, lb in HOSTS if h])
def test_plain_http_endpoints_follow_the_one_rule(host: str, loopback: bool) -> None:
    """Azure endpoints and the Entra JWKS URL accept plain http exactly on loopback hosts."""
    url = f"http://{_url_host(host)}:8000"
    realtime = EnvReader({"AZURE_OPENAI_ENDPOINTS": url, "AZURE_OPENAI_API_KEY": "k"})
    RealtimeSettings.from_env(realtime)
    entra = EnvReader(
        {"ENTRA_TENANT_ID": "t", "ENTRA_AUDIENCE": "api://x", "ENTRA_JWKS_URL": f"{url}/keys"}
    )
    AuthSettings.from_env(entra, bind_host="127.0.0.1")
    assert realtime.problems == ([] if loopback else [_https_only(realtime.problems)])
    assert entra.problems == ([] if loopback else [_https_only(entra.problems)])


def _https_only(problems: list[str]) -> str:
    """Return the one problem, checking that it is the https rule."""
    (problem,) = problems
    assert "https" in problem
    return problem


@pytest.mark.parametrize(("host", "loopback"), IPS)
def test_the_emulator_keeps_ice_candidates_on_loopback_only(host: str, loopback: bool) -> None:
    """An SDP candidate survives the emulator's filter exactly when its address is loopback."""
    sdp = f"v=0\r\na=candidate:1 1 udp 2122194687 {host} 39113 typ host\r\n"
    _, dropped = loopback_candidates_only(sdp)
    assert dropped == (0 if loopback else 1)


def test_no_module_keeps_its_own_loopback_list() -> None:
    """Besides netutil, no source file names ``::1`` in a set or asks ``.is_loopback``."""
    own = re.compile(r"\.is_loopback\b|\{[^}]*\"::1\"")
    offenders = [
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if path.name != "netutil.py" and own.search(path.read_text())
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://api.getzep.com", "https://api.getzep.com"),
        ("https://user:secret@zep.example:8443/api/v4?key=k#f", "https://zep.example:8443"),
        ("http://127.0.0.1:8001/", "http://127.0.0.1:8001"),
        ("http://[::1]:8001/api/v2", "http://[::1]:8001"),
        ("http://user:pw@[2001:db8::7]/x", "http://[2001:db8::7]"),
        ("HTTP://Zep.Example", "http://zep.example"),
    ],
)
def test_public_origin_keeps_scheme_host_and_port_only(url: str, origin: str) -> None:
    """A shown origin drops credentials, path, query and fragment, and brackets IPv6."""
    assert public_origin(url) == origin
