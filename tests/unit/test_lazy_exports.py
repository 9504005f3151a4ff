"""Package re-exports load on first use and still answer every public import path."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import pytest

from engram_voice.lazy import lazy_exports

pytestmark = pytest.mark.process  # two tests start an interpreter

LAZY_PACKAGES = ("engram_voice.memory", "engram_voice.realtime", "engram_voice.realtime.calls")

EXPORTS = [
    (package, name)
    for package in LAZY_PACKAGES
    for name in importlib.import_module(package).__all__
]


@pytest.mark.parametrize(("package", "name"), EXPORTS)
def test_every_exported_name_is_the_defining_modules_object(package: str, name: str) -> None:
    """``from <package> import <name>`` gives the very object its module defines."""
    value = getattr(importlib.import_module(package), name)
    assert vars(importlib.import_module(_defining_module(package, name)))[name] is value
    assert name in dir(importlib.import_module(package))


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_star_import_and_unknown_names_behave_as_for_a_plain_package(package: str) -> None:
    """``import *`` binds every exported name; an unknown name is an AttributeError."""
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)  # noqa: S102 - a fixed, trusted statement
    assert set(importlib.import_module(package).__all__) <= set(namespace)
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = importlib.import_module(package).no_such_name


def test_a_name_is_imported_on_first_access_and_then_stored() -> None:
    """The defining module loads at the first access only; the name is then a plain global."""
    package = type(sys)("lazy_probe_package")
    sys.modules[package.__name__] = package
    try:
        getattr_, dir_ = lazy_exports(package.__name__, {"dumps": "json"})
        vars(package)["__getattr__"] = getattr_
        assert "dumps" in dir_()
        assert "dumps" not in vars(package)
        assert package.dumps is json.dumps
        assert vars(package)["dumps"] is json.dumps
    finally:
        del sys.modules[package.__name__]


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_importing_a_package_loads_none_of_its_exports(package: str) -> None:
    """A fresh ``import <package>`` loads no submodule that its re-exports name."""
    modules = sorted({m for p in LAZY_PACKAGES for m in _export_modules(p)})
    probe = textwrap.dedent(
        f"""
        import json, sys
        import {package}
        print(json.dumps([m for m in {modules!r} if sys.modules.get(m) is not None]))
        """
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and package
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(done.stdout) == []


@pytest.mark.parametrize("extra", ["click", "rich", "pygments"])
def test_httpx_loads_without_its_command_line_extras(extra: str) -> None:
    """After the package, httpx imports and works without loading its CLI's libraries."""
    probe = textwrap.dedent(
        f"""
        import sys
        import engram_voice
        import httpx
        assert httpx.Client is not None
        print(any(n == {extra!r} or n.startswith({extra!r} + ".")
                  for n, m in sys.modules.items() if m is not None))
        """
    )
    done = subprocess.run(  # noqa: S603 - our own interpreter and package
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def _defining_module(package: str, name: str) -> str:
    """Return the submodule of ``package`` that defines the exported ``name``.

    A route handler's ``__module__`` is Litestar's, so the submodule holding the very same
    object under that name is looked up (the first one to define it, not a re-importer).
    """
    value = getattr(importlib.import_module(package), name)
    if getattr(value, "__module__", "").startswith(f"{package}."):
        return str(value.__module__)
    holders = sorted(
        module_name
        for module_name, module in list(sys.modules.items())
        if module_name.startswith(f"{package}.")
        and module is not None
        and vars(module).get(name) is value
    )
    assert holders, f"{package}.{name} is defined by none of its submodules"
    return holders[0]


def _export_modules(package: str) -> set[str]:
    """Return the modules that ``package``'s re-exports come from."""
    return {_defining_module(package, name) for name in importlib.import_module(package).__all__}
