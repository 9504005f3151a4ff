"""The API reference page at ``/schema``: Scalar, from assets shipped inside the package.

``make web`` copies Scalar's standalone bundle (its version pinned in
``web/package-lock.json``) into ``static/apidocs``; the render plugin serves that folder
at ``/schema/assets`` and its page loads nothing from another origin (no CDN script,
stylesheet, favicon or web font), so it works offline and behind strict firewalls.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from litestar import Request
from litestar.openapi.plugins import ScalarRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router

__all__ = ["OPENAPI_PATH", "ShippedScalarRenderPlugin", "apidocs_dir"]

OPENAPI_PATH = "/schema"
_ASSETS = "/assets"
_BUNDLE = "scalar-api-reference.js"
_STYLE = "apidocs.css"
# Scalar's own defaults fetch web fonts from its CDN; the system fonts do.
_OPTIONS = {"withDefaultFonts": False, "hideClientButton": False}
_NOT_BUILT = b"""<!doctype html><html lang="en"><meta charset="utf-8">
<title>engram-voice API</title><body style="font-family:system-ui;max-width:40rem;margin:3rem auto">
<h1>engram-voice API</h1><p>The API reference viewer has not been built into this package.
Run <code>make web</code> from the repository root, then reload this page.</p>
<p>The OpenAPI document itself: <a href="/schema/openapi.json">/schema/openapi.json</a></p>
</body></html>"""


def apidocs_dir() -> Path:
    """Return the package folder that holds the page's script and stylesheet."""
    return Path(str(resources.files("engram_voice"))) / "static" / "apidocs"


class ShippedScalarRenderPlugin(ScalarRenderPlugin):
    """Scalar's render plugin with its script and style served by the service itself."""

    def __init__(self, *, assets_dir: Path | None = None) -> None:
        self.assets_dir = assets_dir or apidocs_dir()
        assets = f"{OPENAPI_PATH}{_ASSETS}"
        super().__init__(
            js_url=f"{assets}/{_BUNDLE}",
            css_url=f"{assets}/{_STYLE}",
            favicon="",  # Litestar's default favicon is on a CDN
            options=_OPTIONS,
        )

    def receive_router(self, router: Router) -> None:
        """Serve the shipped assets next to the page, under ``/schema/assets``."""
        router.register(
            create_static_files_router(
                path=_ASSETS, directories=[self.assets_dir], include_in_schema=False
            )
        )

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        """Render the page, or say how to build the viewer when its bundle is missing."""
        if not (self.assets_dir / _BUNDLE).is_file():
            return _NOT_BUILT
        return super().render(request, openapi_schema)
