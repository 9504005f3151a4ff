"""Keep the garbage collector's full passes off the request path of long-running servers.

Everything a server builds at start-up (the app, its routes, the OpenAPI schema, imported
modules) lives as long as the process. CPython's full collections rescan all of it: with
aiortc or Litestar loaded that took 20-60 ms here, a stall that every in-flight request
waits out. Freezing after start-up moves those objects out of the collector's view.

What a server builds later (500 held calls: sockets, tasks, capture state, ~65,000
tracked objects) is scanned by every full pass again: 40-57 ms of one core in the
capture bench, once every ten second-generation passes by CPython's default. Full passes
are therefore made ten times rarer (:data:`FULL_PASS_EVERY`); young cycles are still
collected as often as before, by the first two generations.
"""

from __future__ import annotations

import gc

__all__ = ["FULL_PASS_EVERY", "freeze_startup_objects"]

FULL_PASS_EVERY = 100
"""Second-generation passes between two full passes (CPython's default is 10)."""


def freeze_startup_objects() -> None:
    """Collect once, freeze what survived, and make full passes ten times rarer."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_PASS_EVERY)
