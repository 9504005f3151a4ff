"""The ``process`` marker: set automatically on every test that starts a process."""

from __future__ import annotations

import types
from typing import Any

import pytest

from tests.conftest import PROCESS_HELPERS, starts_a_process


class FakeItem:
    """Just what the marking rule reads of a collected test item."""

    def __init__(self, *, fixtures: tuple[str, ...] = (), browser: bool = False, **names: Any):
        self.fixturenames = fixtures
        self.module = types.ModuleType("test_example")
        vars(self.module).update(names)
        self._browser = browser

    def get_closest_marker(self, name: str) -> object | None:
        """Return a marker object for ``browser`` when the item has it."""
        return object() if name == "browser" and self._browser else None


@pytest.mark.parametrize("fixture", ["emulator", "second_emulator"])
def test_a_test_using_a_process_fixture_is_marked(fixture: str) -> None:
    """Requesting the emulator process (directly or through another fixture) marks the test."""
    assert starts_a_process(FakeItem(fixtures=("tmp_path", fixture)))  # type: ignore[arg-type]


@pytest.mark.parametrize("helper", sorted(PROCESS_HELPERS))
def test_a_module_using_a_process_helper_is_marked(helper: str) -> None:
    """Every test of a module that imports a process-starting helper is marked."""
    assert starts_a_process(FakeItem(**{helper: object()}))  # type: ignore[arg-type]


def test_browser_tests_are_marked() -> None:
    """The browser tests start the dev stack and Chromium: marked too."""
    assert starts_a_process(FakeItem(browser=True))  # type: ignore[arg-type]


def test_an_in_process_test_is_not_marked() -> None:
    """A test serving apps in this process (serve_app, TestClient) stays in the fast loop."""
    assert not starts_a_process(FakeItem(fixtures=("make_service",), serve_app=object()))  # type: ignore[arg-type]


def test_this_module_runs_in_the_fast_loop(request: pytest.FixtureRequest) -> None:
    """The marker is applied at collection only where due: this in-process test has none."""
    assert request.node.get_closest_marker("process") is None
