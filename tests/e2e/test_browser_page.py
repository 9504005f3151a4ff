"""The demo page as a new user meets it: accessible, keyboard-operable, honest about memory.

In headless Chromium against the local stack (emulator over real WebRTC, Zep stand-in,
service), at a phone (390x844) and a desktop (1280x800) viewport:

- axe-core (the npm package pinned in web/package.json, injected from its own file)
  audits the idle, in-call and ended page: no serious or critical violation;
- during a call the newest turn is on screen without scrolling, and the transcript follows
  new turns unless the reader scrolled up; the call's stale details go at hang-up;
- Connect and Hang up work with the keyboard alone, focus moves between them and a
  polite live region announces the call's states; the focus ring is at least 3:1;
- the memory badge reads "queued" while the Zep stand-in fails and "saved" only after
  the turns are in Zep; turns Zep refuses read "failed"; each call starts afresh;
- an answer cut off by hanging up reads "Interrupted, not saved to memory", no longer in
  italics, and the badge's count is the transcript's final turns;
- screenshots of every state land in artifacts/ (gitignored) for a human to look at.

Every wait is bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import EMULATOR_TURNS, Stack
from tests.e2e.test_browser_voice import (
    CONNECT_TIMEOUT_MS,
    TRANSCRIPT_TIMEOUT_MS,
    _assert_delivered_once,
    _wait_for_turns,
)
from tests.support.axe import audit as _audit

pytestmark = pytest.mark.browser

TURNS = 2 * EMULATOR_TURNS
VIEWPORTS = {"phone": {"width": 390, "height": 844}, "desktop": {"width": 1280, "height": 800}}
RECORD_STATES = """
window.__states = [];
new MutationObserver(() => {
  const d = document.body.dataset;
  window.__states.push({connection: d.connection, memory: d.memory, saved: d.memorySaved});
}).observe(document, {subtree: true, attributes: true,
  attributeFilter: ["data-connection", "data-memory", "data-memory-saved"]});
"""
"""An init script: every change of the call or memory state, as the page shows it."""


@pytest.fixture(name="viewport_page", params=sorted(VIEWPORTS))
def fixture_viewport_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """Open a page in a fresh profile at the phone or the desktop viewport."""
    context = browser.new_context(viewport=VIEWPORTS[request.param], device_scale_factor=1)
    context.set_default_timeout(20_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture(name="zep_faults")
def fixture_zep_faults(stack: Stack) -> Iterator[Any]:
    """Return a function injecting a Zep stand-in fault; every fault is cleared afterwards."""

    def inject(**plan: object) -> None:
        httpx.post(f"{stack.zep.base_url}/_standin/faults", json=plan, timeout=5).raise_for_status()

    try:
        yield inject
    finally:
        inject(clear=True)


def _newest_turn_on_screen(page: Page) -> dict[str, float]:
    """Return the newest turn's box and the viewport; assert the turn is fully on screen."""
    box: dict[str, float] = page.evaluate(
        """() => {
          const items = document.querySelectorAll('#transcript li');
          const r = items[items.length - 1].getBoundingClientRect();
          return {top: r.top, bottom: r.bottom, height: innerHeight, scrollY: scrollY};
        }"""
    )
    assert box["top"] >= 0
    assert box["bottom"] <= box["height"], f"the newest turn is below the fold: {box}"
    return box


def test_the_page_passes_axe_and_keeps_the_newest_turn_on_screen_idle_in_call_and_ended(
    stack: Stack, viewport_page: Page, artifacts: Path
) -> None:
    """Axe-core finds nothing serious in any state; the newest turn shows; stale details go."""
    page = viewport_page
    name = "phone" if page.viewport_size == VIEWPORTS["phone"] else "desktop"
    page.goto(stack.url)
    expect(page.get_by_role("button", name="Connect")).to_be_visible()
    _audit(page, "idle")
    page.screenshot(path=str(artifacts / f"page-{name}-1-idle.png"))

    page.get_by_role("radio", name="Elena").check()
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("body")).to_have_attribute(
        "data-connection", "connected", timeout=CONNECT_TIMEOUT_MS
    )
    turns = _wait_for_turns(page)
    assert len(turns) == TURNS
    expect(page.locator("#audio")).to_contain_text("Receiving")
    expect(page.locator("#voice")).to_contain_text("Ava (HD neural)")
    box = _newest_turn_on_screen(page)
    assert box["scrollY"] == 0, "the page itself should not need scrolling during a call"
    _audit(page, "in call")
    page.screenshot(path=str(artifacts / f"page-{name}-2-in-call.png"))

    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("#connection")).to_have_text("Call ended")
    expect(page.locator("#audio")).to_have_text("—")
    expect(page.locator("body")).not_to_have_attribute("data-audio-packets-in", "0")
    expect(page.locator("#speaking")).to_have_text("—")
    expect(page.locator("#transcript li[data-final='true']")).to_have_count(TURNS)
    expect(page.locator("body")).to_have_attribute("data-memory", "saved", timeout=10_000)
    _audit(page, "ended")
    page.screenshot(path=str(artifacts / f"page-{name}-3-ended.png"), full_page=True)


@pytest.mark.parametrize("scrolled_up", [False, True], ids=["following", "scrolled-up"])
def test_the_transcript_follows_new_turns_unless_the_reader_scrolled_up(
    stack: Stack, page: Page, scrolled_up: bool
) -> None:
    """New turns scroll into view; once the reader scrolls up, the transcript stays put."""
    page.goto(stack.url)
    # A transcript two lines high, so that the emulator's few turns overflow it.
    page.add_style_tag(content=".transcript-region { max-height: 3.5rem !important; }")
    page.get_by_role("button", name="Connect").click()
    page.wait_for_function(
        "document.querySelector('#transcript-region').scrollHeight"
        " > document.querySelector('#transcript-region').clientHeight + 30",
        timeout=TRANSCRIPT_TIMEOUT_MS,
        polling=100,
    )
    if scrolled_up:
        page.locator("#transcript-region").evaluate("region => { region.scrollTop = 0; }")
    _wait_for_turns(page)
    position: dict[str, float] = page.locator("#transcript-region").evaluate(
        "r => ({top: r.scrollTop, bottom: r.scrollHeight - r.scrollTop - r.clientHeight})"
    )
    if scrolled_up:
        assert position["top"] == 0, "the transcript moved although the reader scrolled up"
    else:
        assert position["bottom"] <= 24, f"the newest turn is not in view: {position}"
    page.get_by_role("button", name="Hang up").click()


def _contrast(first: str, second: str) -> float:
    """Return the WCAG contrast ratio of two CSS ``rgb(…)`` colours."""

    def luminance(css: str) -> float:
        channels = [int(float(v)) for v in css[css.index("(") + 1 : css.index(")")].split(",")[:3]]
        linear = [
            c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
            for c in (v / 255 for v in channels)
        ]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(first), luminance(second)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def _focused(page: Page) -> str:
    """Return the id of the focused element ('' for none)."""
    focused: str = page.evaluate("document.activeElement ? document.activeElement.id : ''")
    return focused


def test_keyboard_alone_connects_and_hangs_up_with_focus_and_announcements(
    stack: Stack, page: Page
) -> None:
    """Tab, Enter and Space alone run a call; focus lands on Hang up, then Connect; both said."""
    page.goto(stack.url)
    for _ in range(10):  # the agent radio group is one tab stop, then Connect
        page.keyboard.press("Tab")
        if _focused(page) == "connect":
            break
    assert _focused(page) == "connect", "Connect should be reachable with Tab"
    ring: dict[str, str] = page.evaluate(
        """() => {
          const s = getComputedStyle(document.activeElement);
          const card = getComputedStyle(document.activeElement.closest('.card'));
          return {style: s.outlineStyle, width: s.outlineWidth, color: s.outlineColor,
                  card: card.backgroundColor};
        }"""
    )
    assert ring["style"] == "solid"
    assert float(ring["width"].removesuffix("px")) >= 2
    assert _contrast(ring["color"], ring["card"]) >= 3, ring

    page.keyboard.press("Enter")
    expect(page.locator("body")).to_have_attribute(
        "data-connection", "connected", timeout=CONNECT_TIMEOUT_MS
    )
    assert _focused(page) == "hangup", "focus should move to Hang up, not fall to the body"
    expect(page.locator("#announcer")).to_have_text("Connected to Elena.")

    page.keyboard.press("Space")
    expect(page.locator("#connection")).to_have_text("Call ended")
    assert _focused(page) == "connect", "focus should come back to Connect"
    expect(page.locator("#announcer")).not_to_have_text("")


@pytest.mark.usefixtures("zep_faults")
def test_the_memory_badge_reads_queued_while_zep_fails_and_saved_only_after_delivery(
    stack: Stack, page: Page, zep_faults: Any, artifacts: Path
) -> None:
    """Zep failing: "queued" (never "saved"); Zep back: "saved" once in Zep; next call resets."""
    zep_faults(mode="down")
    page.add_init_script(RECORD_STATES)
    page.goto(stack.url)
    page.get_by_role("radio", name="Marcus").check()
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("body")).to_have_attribute(
        "data-connection", "connected", timeout=CONNECT_TIMEOUT_MS
    )
    session_id = page.locator("body").get_attribute("data-session-id")
    turns = _wait_for_turns(page)
    # The service itself says the turns are stored but not delivered.
    with page.expect_response(
        lambda r: "/progress" in r.url and r.ok and r.json()["queued"] == TURNS, timeout=20_000
    ):
        pass
    expect(page.locator("body")).to_have_attribute("data-memory", "queued")
    expect(page.locator("#memory")).to_contain_text(f"Queued: {TURNS} turns not in memory yet")
    _audit(page, "memory queued, Zep failing")
    page.screenshot(path=str(artifacts / "page-memory-queued-zep-down.png"))
    states: list[dict[str, str]] = page.evaluate("window.__states")
    assert any(s["memory"] == "queued" for s in states), "the state recorder should work"
    assert all(s["memory"] != "saved" for s in states), states

    zep_faults(clear=True)
    expect(page.locator("body")).to_have_attribute("data-memory", "saved", timeout=30_000)
    expect(page.locator("#memory")).to_have_text(f"Saved to memory ({TURNS} turns)")
    assert session_id is not None
    _assert_delivered_once(stack, session_id, turns)

    # The next call starts from nothing, not from the last call's count.
    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("#connection")).to_have_text("Call ended")
    seen = len(page.evaluate("window.__states"))
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("body")).to_have_attribute(
        "data-connection", "connected", timeout=CONNECT_TIMEOUT_MS
    )
    after: list[dict[str, str]] = page.evaluate("window.__states")[seen:]
    first_of_call = next(s for s in after if s["connection"] in ("microphone", "connecting"))
    assert (first_of_call["memory"], first_of_call["saved"]) == ("idle", "0"), after
    page.get_by_role("button", name="Hang up").click()


@pytest.mark.usefixtures("zep_faults")
def test_turns_zep_refuses_read_failed_not_saved(
    stack: Stack, page: Page, zep_faults: Any, artifacts: Path
) -> None:
    """Zep refusing the turns (400): they are dead-lettered and the badge reads "failed"."""
    zep_faults(mode="reject")
    page.goto(stack.url)
    page.get_by_role("button", name="Connect").click()
    _wait_for_turns(page)
    page.get_by_role("button", name="Hang up").click()
    expect(page.locator("body")).to_have_attribute("data-memory", "failed", timeout=30_000)
    expect(page.locator("#memory")).to_contain_text("couldn't be saved")
    _audit(page, "memory failed")
    page.screenshot(path=str(artifacts / "page-memory-failed.png"))


HANG_UP_MID_ANSWER = """() => new Promise((resolve) => {
  // Hang up in the very event that shows the agent mid-answer (after a completed user
  // turn), so the cut is certain, not a race against the answer's end.
  const voice = window.__engramVoice;
  const off = voice.client.on("transcript", (turns) => {
    const answering = turns.find((t) => t.role === "assistant" && !t.final && t.text);
    const users = turns.filter((t) => t.role === "user");
    if (answering && users.length > 0 && users.every((t) => t.final)) {
      off();
      void voice.client.hangUp();
      resolve(answering.id);
    }
  });
})"""


def test_an_answer_cut_off_by_hanging_up_reads_interrupted_and_not_saved(
    stack: Stack, page: Page, artifacts: Path
) -> None:
    """An answer cut off reads "interrupted", upright; the badge counts only the final turns."""
    page.goto(stack.url)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("body")).to_have_attribute(
        "data-connection", "connected", timeout=CONNECT_TIMEOUT_MS
    )
    item_id: str = page.evaluate(HANG_UP_MID_ANSWER)
    expect(page.locator("#connection")).to_have_text("Call ended")

    cut = page.locator(f"#transcript li[data-item-id='{item_id}']")
    expect(cut).to_have_attribute("data-state", "interrupted")
    expect(cut.locator(".turn-note")).to_be_visible()
    expect(cut.locator(".turn-note")).to_have_text("Interrupted, not saved to memory")
    assert cut.locator(".turn-text").evaluate("p => getComputedStyle(p).fontStyle") == "normal"
    expect(page.locator("#transcript li[data-state='partial']")).to_have_count(0)

    expect(page.locator("body")).to_have_attribute("data-memory", "saved", timeout=30_000)
    final = page.locator("#transcript li[data-state='final']").count()
    assert final >= 1
    expect(page.locator("body")).to_have_attribute("data-memory-saved", str(final))
    expect(page.locator("#memory")).to_have_text(
        f"Saved to memory ({final} turn{'' if final == 1 else 's'})"
    )
    _audit(page, "ended, answer interrupted")
    page.screenshot(path=str(artifacts / "page-interrupted-answer.png"))
