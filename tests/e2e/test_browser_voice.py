"""The demo page in headless Chromium, talking to the emulator over real WebRTC on loopback.

Each test opens the page served by the service, connects with the fake microphone, and
follows the call through the page itself (its text, its ``data-*`` attributes and the
``window.__engramVoice`` hooks) and the transcript into the Zep stand-in through the
zep-python SDK. Every wait is bounded.

The page sets calls up through ``POST /realtime/calls`` by default, and so do these tests;
``PAGE_QUERY = "?flow=mint"`` would exercise the browser-direct flow (mint a key, post the
offer to the emulator) with the same expectations. The stack speaks Voice Live by default
(as ``make run``): the service holds each call's control channel at the emulator. One test
switches the agents to Azure OpenAI by configuration (a second service) and talks the same.
"""

from __future__ import annotations

from collections import Counter
from http import HTTPStatus
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, expect

from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, EMULATOR_TURNS, Stack
from tests.support.axe import audit
from tests.support.polling import poll_until

pytestmark = pytest.mark.browser

TURNS = 2 * EMULATOR_TURNS
PAGE_QUERY = ""
"""The demo page's flow for these tests (empty: the default, calls through the service)."""
BROWSER_DIRECT = PAGE_QUERY == "?flow=mint"
SETUP_PATHS = ("/realtime/sessions", "/realtime/calls")
"""Requests that set a call up, in either flow."""
CONNECT_TIMEOUT_MS = 20_000
TRANSCRIPT_TIMEOUT_MS = 30_000
ZEP_TIMEOUT_S = 30.0
VOICE_LIVE_VOICES = {
    "Elena": "en-US-Ava:DragonHDLatestNeural",
    "Marcus": "en-US-GuyNeural",
    "Sage": "en-US-Ava:DragonHDLatestNeural",
}
"""The Azure voice each agent speaks with on Voice Live (Sage inherits Elena's)."""


class SetupAnswers:
    """The answers the page received to its call set-up requests, bodies included."""

    def __init__(self, page: Page) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.texts: list[str] = []
        page.on("response", self._record)

    def _record(self, response: Response) -> None:
        if response.request.method == "POST" and any(p in response.url for p in SETUP_PATHS):
            text = response.text()
            self.texts.append(text)
            if response.ok:
                self.bodies.append(response.json())

    def assert_no_credential(self, stack: Stack) -> None:
        """No answer the page received holds an Azure key or the emulator's minted key."""
        assert self.texts, "the page set no call up"
        for text in self.texts:
            for key in stack.azure_keys:
                assert key not in text, "an Azure key reached the page"
            if not BROWSER_DIRECT:
                assert "ek_" not in text, "an ephemeral Azure key reached the page"


def _voice_live_channels(stack: Stack) -> list[dict[str, Any]]:
    """Return the emulator's records of Voice Live control channels, oldest first."""
    channels: list[dict[str, Any]] = stack.emulator_state()["voicelive_calls"]
    return channels


def _connect(page: Page, stack: Stack, agent: str) -> str:
    """Open the page, pick ``agent``, connect, and return the call's session id."""
    page.goto(stack.url + PAGE_QUERY)
    page.get_by_role("radio", name=agent).check()
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("body")).to_have_attribute(
        "data-connection", "connected", timeout=CONNECT_TIMEOUT_MS
    )
    expect(page.locator("#connection")).to_have_text(f"Connected to {agent}")
    session_id = page.locator("body").get_attribute("data-session-id")
    assert session_id is not None
    assert session_id.startswith("vs_")
    return session_id


def _wait_for_audio(page: Page) -> dict[str, int]:
    """Wait until audio flows both ways (inbound and outbound RTP) and return the counters."""

    # Polled from here: `wait_for_function` does not await an async predicate (a pending
    # promise is truthy), so it could return before any packet was counted.
    def flowing() -> tuple[dict[str, int]] | None:
        stats: dict[str, int] | None = page.evaluate("window.__engramVoice.audioStats()")
        if stats and stats["inboundPackets"] > 0 and stats["outboundPackets"] > 0:
            return (stats,)
        return None

    (stats,) = poll_until(
        flowing, timeout=CONNECT_TIMEOUT_MS / 1000, interval=0.25, what="audio flowing both ways"
    )
    return stats


def _wait_for_turns(page: Page) -> list[dict[str, Any]]:
    """Wait until the emulator's turns are final on the page; return them in order."""
    page.wait_for_function(
        f"window.__engramVoice.transcript().filter(t => t.final && t.text).length >= {TURNS}",
        timeout=TRANSCRIPT_TIMEOUT_MS,
        polling=200,
    )
    turns: list[dict[str, Any]] = page.evaluate(
        "window.__engramVoice.transcript().filter(t => t.final && t.text)"
    )
    expect(page.locator("#transcript li[data-final='true']")).to_have_count(TURNS)
    return turns


def _assert_delivered_once(stack: Stack, session_id: str, turns: list[dict[str, Any]]) -> None:
    """Every page turn is in Zep exactly once, with its text and role, and nothing else is."""
    ids = {turn["id"] for turn in turns}
    messages = stack.wait_for_zep(session_id, ids, timeout=ZEP_TIMEOUT_S)
    counts = Counter((m.metadata or {}).get("message_id") for m in messages)
    assert counts == Counter(ids), f"duplicates or strangers in Zep: {counts}"
    by_id = {(m.metadata or {})["message_id"]: m for m in messages}
    for turn in turns:
        stored = by_id[turn["id"]]
        assert stored.content == turn["text"]
        assert stored.role == turn["role"]


def test_a_live_call_shows_the_transcript_and_saves_each_turn_to_zep_once(
    stack: Stack, page: Page, artifacts: Path
) -> None:
    """A call connects over real WebRTC, plays remote audio, shows turns, and Zep gets each once."""
    answers = SetupAnswers(page)
    channels = len(_voice_live_channels(stack))
    session_id = _connect(page, stack, "Sage")
    stats = _wait_for_audio(page)
    assert stats["outboundPackets"] > 0, "the fake microphone's audio should flow to the emulator"

    turns = _wait_for_turns(page)
    assert [t["role"] for t in turns] == ["user", "assistant"] * EMULATOR_TURNS
    assert all(t["id"].startswith("item_") for t in turns)
    assert "Sage" in turns[1]["text"], "the agent's instructions should have reached Azure"
    expect(page.locator("body")).to_have_attribute("data-memory", "saved", timeout=10_000)
    expect(page.locator("#memory")).to_have_text(f"Saved to memory ({TURNS} turns)")
    expect(page.locator("#audio")).to_contain_text("Receiving")
    expect(page.locator("#error")).to_be_hidden()
    page.screenshot(path=str(artifacts / "browser-live-call.png"), full_page=True)

    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("#connection")).to_have_text("Call ended")
    _assert_delivered_once(stack, session_id, turns)
    answers.assert_no_credential(stack)
    if not BROWSER_DIRECT:
        assert [b["upstream"] for b in answers.bodies] == ["voice-live"]
        (channel,) = _voice_live_channels(stack)[channels:]
        assert channel["voice"]["name"] == VOICE_LIVE_VOICES["Sage"]
        poll_until(
            lambda: _voice_live_channels(stack)[channels]["state"] == "ended",
            timeout=10,
            what="the hang-up to close the Voice Live control channel",
        )


@pytest.mark.skipif(BROWSER_DIRECT, reason="Voice Live calls are set up through the service")
@pytest.mark.parametrize("agent", sorted(VOICE_LIVE_VOICES))
def test_each_agent_speaks_with_its_voice_live_voice(stack: Stack, page: Page, agent: str) -> None:
    """Each agent connects through Voice Live with its Azure voice; no key reaches the page."""
    answers = SetupAnswers(page)
    channels = len(_voice_live_channels(stack))
    _connect(page, stack, agent)
    _wait_for_audio(page)
    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("#connection")).to_have_text("Call ended")
    (channel,) = _voice_live_channels(stack)[channels:]
    assert channel["voice"]["name"] == VOICE_LIVE_VOICES[agent]
    assert channel["session"]["voice"]["type"] == "azure-standard"
    assert [b["agent"]["voice"] for b in answers.bodies] == [VOICE_LIVE_VOICES[agent]]
    answers.assert_no_credential(stack)


@pytest.mark.skipif(BROWSER_DIRECT, reason="the switch is about calls set up through the service")
def test_an_agent_switched_to_azure_openai_by_configuration_talks_the_same(
    stack: Stack, page: Page
) -> None:
    """REALTIME_DEFAULT_UPSTREAM=azure-openai: the page talks through Azure OpenAI; Zep once."""
    service = stack.start_service("azure-openai")
    try:
        answers = SetupAnswers(page)
        channels = len(_voice_live_channels(stack))
        switched = Stack(
            emulator=stack.emulator,
            zep=stack.zep,
            service=service,
            zep_key=stack.zep_key,
            azure_keys=stack.azure_keys,
            tmp=stack.tmp,
        )
        session_id = _connect(page, switched, "Elena")
        _wait_for_audio(page)
        turns = _wait_for_turns(page)
        page.get_by_role("button", name="Hang up").click()
        expect(page.locator("#connection")).to_have_text("Call ended")
        _assert_delivered_once(stack, session_id, turns)
    finally:
        service.stop()
    assert [(b["upstream"], b["agent"]["voice"]) for b in answers.bodies] == [
        ("azure-openai", "marin")
    ]
    assert _voice_live_channels(stack)[channels:] == [], "no Voice Live channel was opened"
    answers.assert_no_credential(stack)


def test_with_zep_down_the_call_still_works_and_turns_arrive_when_zep_returns(
    stack: Stack, page: Page, artifacts: Path
) -> None:
    """Zep being down changes nothing for the call; the queued turns reach Zep once it is back."""
    stack.stop_zep()
    session_id = _connect(page, stack, "Marcus")
    _wait_for_audio(page)
    turns = _wait_for_turns(page)
    # The service stored the turns durably (202) although Zep is down: queued, not saved.
    expect(page.locator("body")).to_have_attribute("data-memory-outbox", "saved", timeout=10_000)
    expect(page.locator("body")).to_have_attribute("data-memory", "queued")
    expect(page.locator("#error")).to_be_hidden()
    assert stack.zep.process is not None
    assert stack.zep.process.poll() is not None, "Zep should still be down during the call"
    page.screenshot(path=str(artifacts / "browser-zep-down.png"), full_page=True)

    stack.start_zep()
    _assert_delivered_once(stack, session_id, turns)
    expect(page.locator("body")).to_have_attribute("data-memory", "saved", timeout=30_000)
    expect(page.locator("body")).to_have_attribute("data-connection", "connected")


def test_turns_left_unsent_are_delivered_after_a_page_reload(
    stack: Stack, page: Page, artifacts: Path
) -> None:
    """Turns the page could not post survive a reload in local storage and are posted afterwards."""
    # The memory endpoint is unreachable from this page, and so is the unload beacon
    # (Playwright cannot intercept beacons sent while a page unloads, so refuse them here).
    page.add_init_script("navigator.sendBeacon = () => false;")
    enrich = "**/memory/enrich"
    page.route(enrich, lambda route: route.abort("connectionrefused"))
    session_id = _connect(page, stack, "Elena")
    turns = _wait_for_turns(page)
    expect(page.locator("body")).to_have_attribute("data-memory", "retrying", timeout=10_000)
    expect(page.locator("#memory")).to_contain_text(f"{TURNS} turns kept")
    expect(page.locator("body")).to_have_attribute("data-connection", "connected")
    audit(page, "memory retrying in the browser")
    page.screenshot(path=str(artifacts / "browser-memory-retrying.png"), full_page=True)
    assert page.evaluate(f"localStorage.getItem('engram-voice.outbox.{session_id}')") is not None

    answers: list[Response] = []

    def record(response: Response) -> None:
        if "/memory/enrich" in response.url and response.status == HTTPStatus.ACCEPTED:
            answers.append(response)

    page.on("response", record)
    page.reload()
    page.wait_for_function(
        f"(window.__engramVoice.memory() || {{}}).pending === {TURNS}", timeout=10_000
    )
    page.unroute(enrich)
    # No call on the reloaded page: the outbox (what the browser still has to post) says it.
    expect(page.locator("body")).to_have_attribute("data-memory-outbox", "saved", timeout=30_000)
    assert page.evaluate(f"localStorage.getItem('engram-voice.outbox.{session_id}')") is None
    # Count what the 202-answered posts carried (reading a keepalive response's body can
    # hang in the DevTools protocol, so the request side is what is inspected).
    posted = [answer.request.post_data_json for answer in answers]
    sent_ids = {m["id"] for body in posted for m in body["messages"]}
    assert sent_ids == {t["id"] for t in turns}, f"posted after the reload: {posted}"
    _assert_delivered_once(stack, session_id, turns)


def test_leaving_the_page_beacons_unsent_turns(stack: Stack, page: Page) -> None:
    """On page hide the unsent turns go out with sendBeacon and reach Zep once."""
    refused: list[str] = []
    page.on(
        "requestfailed",
        lambda request: refused.append(request.method) if "/memory/enrich" in request.url else None,
    )
    page.route("**/memory/enrich", lambda route: route.abort("connectionrefused"))
    session_id = _connect(page, stack, "Elena")
    turns = _wait_for_turns(page)
    expect(page.locator("body")).to_have_attribute("data-memory", "retrying", timeout=10_000)
    assert refused, "every fetch post is refused, so only the beacon can deliver"

    page.goto("about:blank")  # pagehide: the page hands its unsent turns to sendBeacon
    _assert_delivered_once(stack, session_id, turns)


AZURE_DOWN = "The voice service can't reach Azure right now"
FAULTS = (
    [
        ({"target": "client_secrets", "status": 503}, AZURE_DOWN),
        # Browser-direct, the page posts the offer to Azure itself.
        ({"target": "calls", "status": 503}, "Azure couldn't start the audio right now"),
    ]
    if BROWSER_DIRECT
    else [
        ({"target": "voicelive", "mode": "upgrade_401"}, AZURE_DOWN),
        ({"target": "voicelive", "mode": "rtc_call_error"}, AZURE_DOWN),
        ({"target": "voicelive", "mode": "upgrade_404"}, AZURE_DOWN),
    ]
)


@pytest.mark.parametrize(("fault", "message"), FAULTS)
def test_azure_failures_are_explained_in_plain_words(
    stack: Stack, page: Page, fault: dict[str, Any], message: str
) -> None:
    """When Azure fails (Voice Live, minting or the call) the page says so plainly and can retry."""
    httpx.post(
        f"{stack.emulator.base_url}/_emulator/faults", json=fault, timeout=5
    ).raise_for_status()
    page.goto(stack.url + PAGE_QUERY)
    page.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("alert")).to_contain_text(message, timeout=CONNECT_TIMEOUT_MS)
    # No call was started, so none "failed": the page says it could not connect.
    expect(page.locator("#connection")).to_have_text("Couldn't connect")
    expect(page.get_by_role("button", name="Connect")).to_be_enabled()
    expect(page.get_by_role("button", name="Connect")).to_be_focused()
    audit(page, "connection refused, alert shown")


def test_a_blocked_microphone_is_explained_and_no_key_is_minted(
    stack: Stack, browser: Browser
) -> None:
    """Without microphone permission the page tells the user how to allow it and sets up nothing."""
    playwright_browser = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=[a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"],
    )
    try:
        page = playwright_browser.new_page()
        mints: list[str] = []
        page.on(
            "request",
            lambda r: mints.append(r.url) if any(p in r.url for p in SETUP_PATHS) else None,
        )
        page.goto(stack.url + PAGE_QUERY)
        page.get_by_role("button", name="Connect").click()
        expect(page.get_by_role("alert")).to_contain_text(
            "Microphone access is blocked", timeout=CONNECT_TIMEOUT_MS
        )
        assert mints == []
    finally:
        playwright_browser.close()
