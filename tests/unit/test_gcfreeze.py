"""Servers freeze their start-up objects so full GC passes do not stall requests."""

from __future__ import annotations

import gc
from typing import Any

from litestar.testing import TestClient

from engram_voice.app import create_app
from engram_voice.gcfreeze import FULL_PASS_EVERY, freeze_startup_objects
from engram_voice.settings import Settings


def test_freezing_moves_live_objects_out_of_the_collectors_view() -> None:
    """After freezing, the start-up objects are counted as frozen, not collectable."""
    keep = [object() for _ in range(1000)]
    freeze_startup_objects()
    try:
        assert gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()


def test_the_service_freezes_what_it_built_once_started(app_env: dict[str, Any]) -> None:
    """After the app's start-up, its objects are frozen before the first request."""
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(Settings.from_env(app_env))):
        assert gc.get_freeze_count() > 0
    gc.unfreeze()


def test_full_passes_are_ten_times_rarer_and_young_passes_unchanged() -> None:
    """After start-up a full pass waits for FULL_PASS_EVERY second-generation passes, not 10."""
    before = gc.get_threshold()
    try:
        freeze_startup_objects()
        assert gc.get_threshold() == (before[0], before[1], FULL_PASS_EVERY)
        assert FULL_PASS_EVERY >= 10 * 10
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
