"""An accessibility audit of a Playwright page with axe-core (the npm package in web/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

__all__ = ["AXE", "BLOCKING", "audit"]

AXE = Path(__file__).resolve().parents[2] / "web" / "node_modules" / "axe-core" / "axe.min.js"
"""axe-core's browser build, pinned in web/package.json (``make web`` installs it)."""
BLOCKING = ("serious", "critical")
"""The impacts that fail an audit."""
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
"""The rule sets run: WCAG 2.1 A and AA, and axe's best practices."""


def audit(page: Page, state: str) -> None:
    """Run axe-core on the page as it is now; fail listing every serious or critical violation."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `make web` (npm ci installs axe-core)")
    if not page.evaluate("typeof window.axe === 'object'"):
        page.add_script_tag(path=str(AXE))
    result: dict[str, Any] = page.evaluate(
        "tags => axe.run(document, {resultTypes: ['violations'],"
        " runOnly: {type: 'tag', values: tags}})",
        TAGS,
    )
    blocking = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']]}"
        for v in result["violations"]
        if v["impact"] in BLOCKING
    ]
    assert blocking == [], f"axe, {state}: {blocking}"
