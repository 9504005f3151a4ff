"""The API reference at /schema renders in a browser that can reach nothing but loopback."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, Route, expect

from engram_voice.apidocs import apidocs_dir
from engram_voice.app import create_app
from engram_voice.settings import Settings
from tests.support.servers import serve_app

pytestmark = pytest.mark.browser

_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


@pytest.fixture(name="service")
def fixture_service(tmp_path: Path) -> Iterator[str]:
    """Serve the real app (local mode) on a loopback port; yield its base URL."""
    if not (apidocs_dir() / "scalar-api-reference.js").is_file():
        pytest.fail("the API reference viewer is not built: run `make web` (make test does)")
    env = {
        "APP_ENV": "local",
        "AUTH_MODE": "none",
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "k" * 32,
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "MEMORY_SQLITE_PATH": str(Path(tempfile.mkdtemp(dir=tmp_path)) / "queue.sqlite3"),
    }
    with serve_app(create_app(Settings.from_env(env)), ready_path="/healthz") as base:
        yield base


def test_the_api_reference_renders_offline(page: Page, service: str) -> None:
    """With every non-loopback request refused, /schema still shows the operations."""
    refused: list[str] = []

    def only_loopback(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).scheme in {"data", "blob"} or urlsplit(url).hostname in _LOOPBACK:
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", only_loopback)
    page.goto(f"{service}/schema")
    expect(page.get_by_role("heading", name="engram-voice", level=1)).to_be_visible(timeout=20_000)
    # An operation, rendered from /schema/openapi.json by the shipped script.
    expect(page.get_by_role("heading", name="Liveness: the process answers")).to_be_visible()
    expect(page.get_by_role("link", name="get /healthz")).to_be_visible()
    assert refused == []
