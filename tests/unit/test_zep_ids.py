"""The Zep id mapping: injective, URL-path safe, and the identity on ids that are safe."""

from __future__ import annotations

import re
import urllib.parse

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from engram_voice.memory.zep_sink import zep_id

_ESCAPE = re.compile(r"~([0-9A-F]{2})")
_OUTPUT = re.compile(r"(?:[A-Za-z0-9._:@-]|~[0-9A-F]{2})+")
BASE = "http://127.0.0.1:8001/api/v2"

# Every character class that once broke a path: reserved, percent, space, dots, unicode,
# control characters and lone surrogates (the sink maps them even though auth refuses them).
any_id = st.text(min_size=1, max_size=300)
odd_ids = [
    "a/b",
    "x?y=1#z",
    "%2F",
    "a%41",
    "a b",
    ".",
    "..",
    "...",
    "~",
    "~2F",
    "./a",
    "../a",
    "Zoë",
    "用户",
    "\U0001f600",
    "a\x00b",
    "\ud800",
    "line\nbreak",
    "x" * 600,
]


def unescape(mapped: str) -> str:
    """Invert :func:`zep_id` (test oracle: a decoder proves the mapping injective)."""
    raw = bytearray()
    position = 0
    while position < len(mapped):
        if mapped[position] == "~":
            raw += bytes.fromhex(mapped[position + 1 : position + 3])
            position += 3
        else:
            raw += mapped[position].encode()
            position += 1
    return raw.decode("utf-8", "surrogatepass")


def sdk_path(user_id: str) -> str:
    """Return the request path zep-python builds for ``GET users/{user_id}``."""
    url = urllib.parse.urljoin(f"{BASE}/", f"users/{user_id}")
    return httpx.URL(url).raw_path.decode("ascii")


@given(any_id)
@example("a/b")
@example("..")
def test_the_mapping_decodes_back_to_the_id(user_id: str) -> None:
    """Every id maps to a string that decodes to exactly that id, so no two ids collide."""
    assert unescape(zep_id(user_id)) == user_id


@given(any_id, any_id)
def test_distinct_ids_map_to_distinct_zep_ids(first: str, second: str) -> None:
    """Two different ids never share a Zep id (injectivity, checked pairwise)."""
    if first != second:
        assert zep_id(first) != zep_id(second)


@given(any_id)
@example(".")
@example("..")
@example("x?y=1#z")
def test_a_mapped_id_survives_the_sdk_url_as_one_path_segment(user_id: str) -> None:
    """The SDK's unencoded ``urljoin`` keeps a mapped id as one unchanged, final segment."""
    mapped = zep_id(user_id)
    assert _OUTPUT.fullmatch(mapped)
    assert mapped not in {".", ".."}
    assert sdk_path(mapped) == f"/api/v2/users/{mapped}"


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-"))
def test_safe_ids_are_unchanged(user_id: str) -> None:
    """Ids of URL-safe characters keep their id, so existing Zep users and sessions stay."""
    if user_id not in {"", ".", ".."}:
        assert zep_id(user_id) == user_id


@pytest.mark.parametrize(
    "user_id",
    ["00000000-0000-0000-0000-0000000000a1", "github:1234", "local-user", "a.b@example.com"],
)
def test_the_ids_of_every_auth_mode_today_are_unchanged(user_id: str) -> None:
    """Entra object ids, prefixed EasyAuth ids and the default local user map to themselves."""
    assert zep_id(user_id) == user_id


@pytest.mark.parametrize("user_id", odd_ids)
def test_odd_ids_map_to_safe_segments(user_id: str) -> None:
    """Reserved characters, dot segments, unicode and control characters are all escaped."""
    mapped = zep_id(user_id)
    assert _OUTPUT.fullmatch(mapped)
    assert unescape(mapped) == user_id
    assert sdk_path(mapped) == f"/api/v2/users/{mapped}"


def test_examples_of_the_documented_rule() -> None:
    """The escapes docs/architecture.md shows are what the code does."""
    assert zep_id("a/b") == "a~2Fb"
    assert zep_id("x?y=1#z") == "x~3Fy~3D1~23z"
    assert zep_id("..") == "~2E~2E"
    assert zep_id("~") == "~7E"
    assert zep_id("Zoë") == "Zo~C3~AB"


def test_an_empty_id_is_refused() -> None:
    """An empty id names nothing: the mapping refuses it instead of addressing a listing."""
    with pytest.raises(ValueError, match="empty"):
        zep_id("")
