"""The local stack (emulator, Zep stand-in, service) as processes, and headless Chromium."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from zep_cloud.client import Zep as ZepCloud

from engram_voice.web.routes import built_client_dir
from tests.support.polling import poll_until
from tests.support.servers import ServiceProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--allow-loopback-in-peer-connection",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
EMULATOR_TURNS = 2
"""User/assistant exchanges the emulator plays per call: 4 transcript turns."""


@dataclass
class Stack:
    """The three processes of ``make run`` on loopback, with the Zep stand-in restartable."""

    emulator: ServiceProcess
    zep: ServiceProcess
    service: ServiceProcess
    zep_key: str
    azure_keys: tuple[str, str]
    tmp: Path

    def start_service(self, upstream: str) -> ServiceProcess:
        """Start another service on this emulator and Zep whose agents default to ``upstream``."""
        env = service_env(
            self.emulator,
            self.zep,
            azure_key=self.azure_keys[0],
            zep_key=self.zep_key,
            tmp=self.tmp,
            upstream=upstream,
        )
        return ServiceProcess(
            ["serve"], env=env, log_path=self.tmp / f"service-{upstream}.log"
        ).start()

    def emulator_state(self) -> dict[str, Any]:
        """Return the emulator's ``/_emulator/state`` (calls, Voice Live channels, counters)."""
        state: dict[str, Any] = httpx.get(
            f"{self.emulator.base_url}/_emulator/state", timeout=10
        ).json()
        return state

    @property
    def url(self) -> str:
        """Return the demo page's URL."""
        return self.service.base_url + "/"

    def stop_zep(self) -> None:
        """Stop the Zep stand-in (its SQLite file stays)."""
        self.zep.stop()

    def start_zep(self) -> None:
        """Start the Zep stand-in again on the same port and database."""
        if self.zep.process is not None and self.zep.process.poll() is None:
            return
        self.zep = ServiceProcess(
            self.zep.args, env=self.zep.env, port=self.zep.port, log_path=self.zep.log_path
        )
        self.zep.start()

    def zep_messages(self, session_id: str) -> list[Any]:
        """Read a session's messages through the real zep-cloud SDK ([] if none yet).

        Zep v4 threads carry no id of ours: the session's messages are found by the
        ``session_id`` the v4 sink puts in each message's metadata.
        """
        # The synchronous client: Playwright's sync API already runs a loop in this thread.
        client = ZepCloud(
            base_url=f"{self.zep.base_url}/api/v4", api_key=self.zep_key, timeout=5, max_retries=0
        )
        threads = [t.uuid_ for t in client.thread.list(page_size=100) if t.uuid_ is not None]
        return [
            message
            for thread in threads
            for message in client.thread.list_messages(thread, page_size=100)
            if (message.metadata or {}).get("session_id") == session_id
        ]

    def wait_for_zep(self, session_id: str, message_ids: set[str], *, timeout: float) -> list[Any]:
        """Poll Zep until every message id is stored; return the session's messages."""

        def stored() -> tuple[list[Any]] | None:
            messages = self.zep_messages(session_id)
            ids = {(m.metadata or {}).get("message_id") for m in messages}
            return (messages,) if message_ids <= ids else None

        what = f"Zep session {session_id} holding {sorted(message_ids)}"
        (messages,) = poll_until(stored, timeout=timeout, interval=0.2, what=what)
        return messages


def service_env(
    emulator: ServiceProcess,
    zep: ServiceProcess,
    *,
    azure_key: str,
    zep_key: str,
    tmp: Path,
    upstream: str,
) -> dict[str, str]:
    """Return the service's env as ``make run`` sets it: both upstreams, ``upstream`` default."""
    return {
        "APP_ENV": "local",
        "AUTH_MODE": "none",
        "SERVE_WEB": "true",
        "LOG_FORMAT": "json",
        "AZURE_OPENAI_ENDPOINTS": emulator.base_url,
        "AZURE_OPENAI_API_KEY": azure_key,
        "AZURE_VOICELIVE_ENDPOINT": emulator.base_url,
        "AZURE_VOICELIVE_KEY": azure_key,
        "REALTIME_DEFAULT_UPSTREAM": upstream,
        "MEMORY_TOKEN_KEYS": f"k1:{secrets.token_hex(32)}",
        "MEMORY_SQLITE_PATH": str(tmp / f"memory-queue-{upstream}.sqlite3"),
        "ZEP_API": "v4",  # as make run: Zep Cloud's API, served by the stand-in
        "ZEP_API_URL": zep.base_url,
        "ZEP_API_KEY": zep_key,
        # Quick retries so "Zep is back" shows within seconds, not minutes.
        "MEMORY_POLL_SECONDS": "0.2",
        "MEMORY_BACKOFF_BASE_SECONDS": "0.2",
        "MEMORY_BACKOFF_MAX_SECONDS": "1",
        "MEMORY_CIRCUIT_COOLDOWN_SECONDS": "1",
        "MEMORY_RETRY_INLINE_ATTEMPTS": "1",
    }


@pytest.fixture(name="stack", scope="module")
def fixture_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start emulator, Zep stand-in and service as separate processes, as ``make run`` does.

    The service speaks Voice Live by default (as ``make run``); :attr:`Stack.azure_keys`
    lets tests check that no answer carries them. ``Stack.start_service`` starts a second
    service on the same emulator and Zep with another default upstream.
    """
    if not (built_client_dir() / "index.html").is_file():
        pytest.fail("the web client is not built: run `make web` (make test does it first)")
    os.environ.pop("ZEP_API_URL", None)  # it would silently redirect the SDK
    tmp = tmp_path_factory.mktemp("stack")
    azure_keys = (secrets.token_hex(16), secrets.token_hex(16))
    zep_key = secrets.token_hex(16)
    emulator = ServiceProcess(
        ["emulator"],
        env={
            "EMULATOR_API_KEYS": ",".join(azure_keys),
            "EMULATOR_TURN_INTERVAL_SECONDS": "1",
            "EMULATOR_MAX_TURNS": str(EMULATOR_TURNS),
            # Every test opens Voice Live calls; no new-connections-per-minute quota here.
            "EMULATOR_VOICELIVE_CONNECTIONS_PER_MINUTE": "0",
        },
        log_path=tmp / "emulator.log",
    ).start()
    zep = ServiceProcess(
        ["zep-standin"],
        env={"ZEP_STANDIN_API_KEY": zep_key, "ZEP_STANDIN_DB": str(tmp / "zep.sqlite3")},
        log_path=tmp / "zep.log",
    ).start()
    service = ServiceProcess(
        ["serve"],
        env=service_env(
            emulator, zep, azure_key=azure_keys[0], zep_key=zep_key, tmp=tmp, upstream="voice-live"
        ),
        log_path=tmp / "service.log",
    ).start()
    stack = Stack(
        emulator=emulator,
        zep=zep,
        service=service,
        zep_key=zep_key,
        azure_keys=azure_keys,
        tmp=tmp,
    )
    try:
        yield stack
    finally:
        for process in (stack.service, stack.zep, stack.emulator):
            process.stop()


@pytest.fixture(autouse=True)
def _clear_emulator_faults_after(request: pytest.FixtureRequest) -> Iterator[None]:
    """Leave no injected emulator fault and no stopped Zep behind for the next test."""
    yield
    if "stack" in request.fixturenames:
        stack: Stack = request.getfixturevalue("stack")
        httpx.post(f"{stack.emulator.base_url}/_emulator/faults", json={"clear": True}, timeout=5)
        stack.start_zep()


@pytest.fixture(name="playwright", scope="module")
def fixture_playwright() -> Iterator[Playwright]:
    """Run Playwright's driver for the module (Debian's Chromium, never a downloaded one).

    Its sync API keeps an event loop running in the main thread, so it must stop before
    other modules' asyncio tests run (hence module scope, not session scope).
    """
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(name="browser", scope="module")
def fixture_browser(playwright: Playwright) -> Iterator[Browser]:
    """Launch headless Chromium with a fake microphone that is granted without a prompt."""
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture(name="context")
def fixture_context(browser: Browser) -> Iterator[BrowserContext]:
    """Give each test a fresh profile (its own local storage)."""
    context = browser.new_context(viewport={"width": 960, "height": 1000})
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture(name="page")
def fixture_page(context: BrowserContext) -> Page:
    """Open a page in the test's profile."""
    return context.new_page()


@pytest.fixture(name="artifacts")
def fixture_artifacts() -> Path:
    """Return the (gitignored) folder screenshots are saved in."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
