"""What the package ships: the production install leaves out the emulator's media stack."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "engram_voice"
EMULATOR_EXTRA = ("aiortc", "aioice", "av", "pylibsrtp")
"""The WebRTC media stack that only the local Azure emulator needs."""


def _pyproject() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: object) -> set[str]:
    assert isinstance(requirements, list)
    return {re.split(r"[\[<>=!~ ;]", str(item), maxsplit=1)[0].lower() for item in requirements}


def test_runtime_dependencies_leave_out_the_media_stack_and_unused_packages() -> None:
    """The media stack is the `emulator` extra; redis (never imported) and cryptography are not."""
    project = _pyproject()["project"]
    assert isinstance(project, dict)
    runtime = _names(project["dependencies"])
    assert runtime.isdisjoint({*EMULATOR_EXTRA, "redis", "cryptography"})
    assert "pyjwt" in runtime  # pyjwt[crypto] brings cryptography for Entra's RS256
    assert "aiortc" in _names(project["optional-dependencies"]["emulator"])


def test_no_module_outside_the_emulator_imports_the_media_stack() -> None:
    """Only engram_voice.emulator may import aiortc, aioice, av or pylibsrtp."""
    pattern = re.compile(rf"^\s*(?:import|from)\s+({'|'.join(EMULATOR_EXTRA)})\b", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for path in SRC.rglob("*.py")
        if "emulator" not in path.relative_to(SRC).parts and pattern.search(path.read_text())
    ]
    assert offenders == []


def test_every_module_but_the_emulator_imports_without_the_extra() -> None:
    """With the media stack unimportable, every other module of the package still imports."""
    blocked = ", ".join(f"{name!r}: None" for name in EMULATOR_EXTRA)
    script = (
        "import importlib, pkgutil, sys\n"
        f"sys.modules.update({{{blocked}}})\n"
        "import engram_voice\n"
        "names = [m.name for m in pkgutil.walk_packages(engram_voice.__path__, 'engram_voice.')\n"
        "         if not m.name.startswith('engram_voice.emulator')\n"
        "         and not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = subprocess.run(  # noqa: S603 - our interpreter
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 50


def test_starting_the_service_does_not_import_rich_or_pygments() -> None:
    """Importing the app skips rich and pygments (40-120 ms), which stay importable after."""
    script = (
        "import sys\n"
        "import engram_voice.app, engram_voice.cli, uvicorn\n"
        "loaded = sorted(n for n in sys.modules if n.split('.')[0] in ('rich', 'pygments'))\n"
        "import rich.console, pygments.lexers\n"
        "print(loaded)\n"
    )
    result = subprocess.run(  # noqa: S603 - our interpreter
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
