"""The /schema page is self-contained: every script, style and icon comes from the service."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.testing import TestClient

from engram_voice.apidocs import OPENAPI_PATH, ShippedScalarRenderPlugin, apidocs_dir
from engram_voice.app import create_app
from engram_voice.settings import Settings

_URL_ATTRIBUTE = re.compile(r"""\b(?:src|href|data-url)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_ABSOLUTE = re.compile(r"""(?:https?:)?//[^\s"'<>]+""", re.IGNORECASE)


@pytest.fixture(name="client")
def fixture_client() -> Iterator[TestClient]:  # type: ignore[type-arg]
    """Run the app (local mode) in process."""
    env = {
        "APP_ENV": "local",
        "AUTH_MODE": "none",
        "AZURE_OPENAI_ENDPOINTS": "http://127.0.0.1:9",
        "AZURE_OPENAI_API_KEY": "k" * 32,
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "MEMORY_SQLITE_PATH": str(Path(tempfile.mkdtemp()) / "queue.sqlite3"),
    }
    with TestClient(create_app(Settings.from_env(env))) as client:
        yield client


@pytest.mark.parametrize("path", ["/schema", "/schema/scalar"])
def test_the_api_reference_page_names_no_other_origin(client: TestClient, path: str) -> None:  # type: ignore[type-arg]
    """The page's HTML holds no absolute URL; each script and style it names is served here."""
    page = client.get(path)
    assert page.status_code == 200
    assert _ABSOLUTE.findall(page.text) == []
    if not (apidocs_dir() / "scalar-api-reference.js").is_file():
        pytest.skip("the viewer is not built (make web); the notice page is checked below")
    urls = _URL_ATTRIBUTE.findall(page.text)
    assert "/schema/assets/scalar-api-reference.js" in urls
    for url in urls:
        assert url.startswith("/"), url
        assert client.get(url).status_code == 200, url


def test_without_the_built_viewer_the_page_says_how_to_build_it(tmp_path: Path) -> None:
    """A package built without `make web` shows how to build the viewer, not a blank page."""
    app = Litestar(
        openapi_config=OpenAPIConfig(
            title="t",
            version="1",
            path=OPENAPI_PATH,
            render_plugins=[ShippedScalarRenderPlugin(assets_dir=tmp_path)],
        )
    )
    with TestClient(app) as client:
        page = client.get("/schema")
    assert page.status_code == 200
    assert "make web" in page.text
    assert _ABSOLUTE.findall(page.text) == []
