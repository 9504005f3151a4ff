"""Package re-exports loaded on first use (PEP 562), so a submodule costs only its imports.

A package ``__init__`` that re-exports names eagerly makes every import of any of its
submodules load all of them: importing ``engram_voice.memory.schemas`` would load the queue,
the routes and Litestar. The capture process imports a handful of small modules and starts
while calls wait, so the packages re-export lazily instead::

    if TYPE_CHECKING:  # type checkers and readers see the names
        from engram_voice.memory.queue import TurnQueue
    else:
        __getattr__, __dir__ = lazy_exports(__name__, {"TurnQueue": "engram_voice.memory.queue"})

``from engram_voice.memory import TurnQueue`` works as before: the first access imports the
defining module and stores the name in the package, so later accesses are plain lookups.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return a package's ``__getattr__`` and ``__dir__`` serving ``exports`` (name -> module)."""
    namespace = sys.modules[package].__dict__
    table = dict(exports)

    def __getattr__(name: str) -> Any:  # noqa: N807 - PEP 562's module hook
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:  # noqa: N807 - PEP 562's module hook
        return sorted({*namespace, *table})

    return __getattr__, __dir__
