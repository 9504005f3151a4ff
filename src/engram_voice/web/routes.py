"""Static routes for the demo page; a plain notice when the client has not been built."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from litestar import MediaType, get
from litestar.static_files import create_static_files_router

__all__ = ["built_client_dir", "web_routes"]

_NOT_BUILT = """<!doctype html><html lang="en"><meta charset="utf-8"><title>engram-voice</title>
<body style="font-family:system-ui;max-width:40rem;margin:3rem auto">
<h1>engram-voice</h1><p>The web client has not been built. Run <code>make run</code>
(or <code>make web</code>) from the repository root, then reload this page.</p>
<p>API documentation: <a href="/schema">/schema</a> &middot;
status: <a href="/status">/status</a></p>
</body></html>"""


def built_client_dir() -> Path:
    """Return where ``make web`` puts the built client inside the package."""
    return Path(str(resources.files("engram_voice"))) / "static" / "app"


def web_routes() -> list[Any]:
    """Return the routes that serve the demo page at ``/``."""
    directory = built_client_dir()
    if (directory / "index.html").is_file():
        return [
            create_static_files_router(
                path="/", directories=[directory], html_mode=True, include_in_schema=False
            )
        ]

    @get("/", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
    def not_built() -> str:
        return _NOT_BUILT

    return [not_built]
