"""Servers freeze their start-up objects so full GC passes do not stall requests."""

from __future__ import annotations

import gc

from engram_voice.gcfreeze import freeze_startup_objects


def test_freezing_moves_live_objects_out_of_the_collectors_view() -> None:
    """After freezing, the start-up objects are counted as frozen, not collectable."""
    keep = [object() for _ in range(1000)]
    freeze_startup_objects()
    try:
        assert gc.get_freeze_count() >= len(keep)
    finally:
        gc.unfreeze()
