"""Fixtures shared by the whole suite: the emulator process and in-process services."""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import httpx
import pytest
import structlog

from engram_voice.app import create_app
from engram_voice.services import Overrides
from engram_voice.settings import Settings
from tests.support.postgres import fixture_postgres_server
from tests.support.servers import ServiceProcess, serve_app

__all__ = ["fixture_postgres_server"]  # the session's PostgreSQL server (tests/support/postgres.py)

ServiceFactory = Callable[..., AbstractContextManager[str]]


@pytest.fixture(autouse=True, scope="session")
def _uncached_loggers() -> Iterator[None]:
    """Keep structlog from caching loggers while tests run.

    ``configure_logging`` caches each logger on first use (right for a service). In one
    test process a logger cached by a test that configured production logging would
    ignore every later ``structlog.testing.capture_logs``, so a test's log assertions
    would depend on which tests ran before it.
    """
    original = structlog.configure

    def configure(*args: object, **kwargs: object) -> None:
        kwargs["cache_logger_on_first_use"] = False
        original(*args, **kwargs)  # type: ignore[arg-type]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(structlog, "configure", configure)
        structlog.configure(cache_logger_on_first_use=False)
        yield


class Emulator:
    """A running emulator process plus its admin API (faults, recorded requests)."""

    def __init__(self, process: ServiceProcess, keys: tuple[str, str], bearer: str) -> None:
        self.process = process
        self.keys = keys
        self.bearer = bearer

    @property
    def url(self) -> str:
        """Return the emulator's base URL (what AZURE_OPENAI_ENDPOINTS names)."""
        return self.process.base_url

    def fault(self, **fault: object) -> None:
        """Inject a fault into the emulator's client_secrets endpoint."""
        httpx.post(f"{self.url}/_emulator/faults", json=fault, timeout=5).raise_for_status()

    def clear(self) -> None:
        """Remove every injected fault."""
        self.fault(clear=True)

    def state(self) -> dict[str, object]:
        """Return the emulator's recorded state (counters, recent mint requests)."""
        response = httpx.get(f"{self.url}/_emulator/state", timeout=5)
        response.raise_for_status()
        result: dict[str, object] = response.json()
        return result


_KEYS = (secrets.token_hex(16), secrets.token_hex(16))
_BEARER = f"entra-{secrets.token_hex(16)}"


def _start_emulator(tmp: Path, name: str) -> tuple[ServiceProcess, tuple[str, str], str]:
    # Both regions accept the same credentials, as one key (or one Entra identity) would
    # be configured for every endpoint of the service.
    keys, bearer = _KEYS, _BEARER
    process = ServiceProcess(
        ["emulator"],
        env={
            "EMULATOR_API_KEYS": ",".join(keys),
            "EMULATOR_BEARER_TOKENS": bearer,
            "EMULATOR_TURN_INTERVAL_SECONDS": "1",
        },
        log_path=tmp / f"{name}.log",
    )
    return process.start(), keys, bearer


@pytest.fixture(name="emulator", scope="session")
def fixture_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Run one emulator process for the session; faults are cleared around each use."""
    process, keys, bearer = _start_emulator(tmp_path_factory.mktemp("emulator"), "primary")
    try:
        yield Emulator(process, keys, bearer)
    finally:
        process.stop()


@pytest.fixture(name="second_emulator", scope="session")
def fixture_second_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    """Run a second emulator: the failover region, sharing the primary's keys."""
    process, keys, bearer = _start_emulator(tmp_path_factory.mktemp("emulator2"), "secondary")
    try:
        yield Emulator(process, keys, bearer)
    finally:
        process.stop()


@pytest.fixture(autouse=True)
def _clear_emulator_faults(request: pytest.FixtureRequest) -> Iterator[None]:
    """Leave no injected fault behind for the next test."""
    yield
    for name in ("emulator", "second_emulator"):
        if name in request.fixturenames:
            request.getfixturevalue(name).clear()


def service_env(emulator: Emulator, **extra: str) -> dict[str, str]:
    """Return a local-mode environment pointing the service at ``emulator``."""
    env = {
        "APP_ENV": "local",
        "LOG_FORMAT": "json",
        "AUTH_MODE": "none",
        "AZURE_OPENAI_ENDPOINTS": emulator.url,
        "AZURE_OPENAI_API_KEY": emulator.keys[0],
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "UPSTREAM_TIMEOUT_SECONDS": "2",
        "SERVE_WEB": "false",
        "MEMORY_SQLITE_PATH": str(Path(tempfile.mkdtemp(prefix="engram-queue-")) / "queue.db"),
    }
    env.update(extra)
    return env


@pytest.fixture(name="make_service")
def fixture_make_service() -> ServiceFactory:
    """Return a factory that serves the app for an env mapping in-process on loopback."""

    @contextmanager
    def make(env: Mapping[str, str], overrides: Overrides | None = None) -> Iterator[str]:
        settings = Settings.from_env(env)
        with serve_app(create_app(settings, overrides=overrides), ready_path="/healthz") as url:
            yield url

    return make


# Tests that start a process of their own (a service, the emulator, a CLI command, the dev
# stack, a browser) are marked ``process`` here, so none can forget it; ``make test-fast``
# deselects them. A test is one when it uses a fixture that starts such a process, when
# its module uses a helper that does, or when it drives the browser.
PROCESS_FIXTURES = frozenset({"emulator", "second_emulator", "postgres_server"})
PROCESS_HELPERS = frozenset({"ServiceProcess", "run_command", "memory_service", "noop_service"})


def starts_a_process(item: pytest.Item) -> bool:
    """Return True when ``item`` starts a process (see the rule above)."""
    if item.get_closest_marker("browser") or PROCESS_FIXTURES.intersection(
        getattr(item, "fixturenames", ())
    ):
        return True
    module = getattr(item, "module", None)
    return module is not None and not PROCESS_HELPERS.isdisjoint(vars(module))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that starts a process with ``process``."""
    for item in items:
        if starts_a_process(item):
            item.add_marker(pytest.mark.process)
