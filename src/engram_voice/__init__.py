"""engram-voice: realtime credential vending and durable memory enrichment for Engram agents."""

import sys as _sys

__all__ = ["__version__"]

__version__ = "0.1.0"

# structlog (for pretty tracebacks) and httpx (for its command-line client) import rich and
# pygments at import time when they are installed (Litestar's CLI brings them): 40-120 ms
# of every start for features this service never uses (logs.py renders exceptions as plain
# text). Both libraries fall back cleanly when those are missing.
# - structlog, which every process logs with, is loaded here while the two are hidden; they
#   are importable again afterwards.
# - httpx is not loaded here: the capture process never uses it and starts while calls
#   wait. Its command-line module (httpx._main: click, rich, pygments) is marked missing
#   instead, so whichever module imports httpx later gets httpx without its CLI (the
#   `httpx` command, a process of its own, is unaffected).
_HIDDEN = ("rich", "pygments")
if "httpx" not in _sys.modules:
    _sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]  # ImportError
if not any(name in _sys.modules for name in ("structlog", *_HIDDEN)):
    for _name in _HIDDEN:
        _sys.modules[_name] = None  # type: ignore[assignment]  # import fails: ModuleNotFoundError
    try:
        import structlog  # noqa: F401
    finally:
        for _name in _HIDDEN:
            del _sys.modules[_name]
