"""engram-voice: realtime credential vending and durable memory enrichment for Engram agents."""

import sys as _sys

__all__ = ["__version__"]

__version__ = "0.1.0"

# structlog (for pretty tracebacks) and httpx (for its command-line client) import rich and
# pygments at import time when they are installed (Litestar's CLI brings them): 40-120 ms
# of every start for features this service never uses (logs.py renders exceptions as plain
# text). Both libraries fall back cleanly when those are missing, so they are hidden while
# the two load and are importable again afterwards.
_HIDDEN = ("rich", "pygments")
if not any(name in _sys.modules for name in ("structlog", "httpx", *_HIDDEN)):
    for _name in _HIDDEN:
        _sys.modules[_name] = None  # type: ignore[assignment]  # import fails: ModuleNotFoundError
    try:
        import httpx  # noqa: F401
        import structlog  # noqa: F401
    finally:
        for _name in _HIDDEN:
            del _sys.modules[_name]
