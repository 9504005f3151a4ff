// @vitest-environment jsdom
/// <reference types="node" />
import { readFileSync } from "node:fs";
import { join } from "node:path";

import { beforeEach, describe, expect, it } from "vitest";

import { INTERRUPTED_NOTE, TranscriptView } from "../src/demo/transcript-view";
import type { TranscriptTurn } from "../src/lib/types";

/** The page's own stylesheet (vitest stubs CSS imports, so it is read from disk; tests run in web/). */
const PAGE_CSS = readFileSync(join(process.cwd(), "src", "demo", "style.css"), "utf8");

interface Shown {
  id: string | undefined;
  state: string | undefined;
  final: string | undefined;
  text: string | null | undefined;
  note: boolean;
  italic: boolean;
}

function mount(): { view: TranscriptView; list: HTMLOListElement; empty: HTMLElement } {
  const style = document.createElement("style");
  style.textContent = PAGE_CSS; // the page's stylesheet decides what is in italics
  document.head.replaceChildren(style);
  document.body.innerHTML = `<div id="region"><p id="empty">Nothing yet</p><ol id="list"></ol></div>`;
  const list = document.getElementById("list") as HTMLOListElement;
  const empty = document.getElementById("empty") as HTMLElement;
  return { view: new TranscriptView(document.getElementById("region") as HTMLElement, list, empty), list, empty };
}

function shown(list: HTMLOListElement): Shown[] {
  return [...list.querySelectorAll<HTMLLIElement>("li")].map((li) => {
    const note = li.querySelector<HTMLElement>(".turn-note");
    return {
      id: li.dataset["itemId"],
      state: li.dataset["state"],
      final: li.dataset["final"],
      text: li.querySelector(".turn-text")?.textContent,
      note: note !== null && !note.hidden && note.textContent === INTERRUPTED_NOTE,
      italic: getComputedStyle(li.querySelector(".turn-text") as Element).fontStyle === "italic",
    };
  });
}

const turn = (id: string, text: string, extra: Partial<TranscriptTurn> = {}): TranscriptTurn => ({ id, role: "assistant", text, final: false, ...extra });

describe("the demo page's transcript", () => {
  let mounted: ReturnType<typeof mount>;
  beforeEach(() => {
    mounted = mount();
  });

  it.each([
    ["a partial", turn("a", "Hel"), { state: "partial", final: "false", text: "Hel", note: false }],
    ["a partial (no text yet)", turn("a", ""), { state: "partial", final: "false", text: "…", note: false }],
    ["a final", turn("a", "Hello.", { final: true }), { state: "final", final: "true", text: "Hello.", note: false }],
    ["an interrupted", turn("a", "Hel", { interrupted: true }), { state: "interrupted", final: "false", text: "Hel", note: true }],
  ])("shows %s turn as such", (_, given, expected) => {
    mounted.view.render([given], "Elena");
    expect(shown(mounted.list)).toEqual([{ id: "a", italic: expected.state === "partial", ...expected }]);
  });

  it("turns a streaming turn into an interrupted one in place: upright, noted as not saved", () => {
    mounted.view.render([turn("a", "Hi.", { final: true }), turn("b", "Half")], "Elena");
    const item = mounted.list.querySelector('li[data-item-id="b"]');
    expect(shown(mounted.list).map((s) => [s.state, s.italic])).toEqual([["final", false], ["partial", true]]);

    mounted.view.render([turn("a", "Hi.", { final: true }), turn("b", "Half", { interrupted: true })], "Elena");
    expect(mounted.list.querySelector('li[data-item-id="b"]')).toBe(item);
    expect(shown(mounted.list)[1]).toMatchObject({ state: "interrupted", italic: false, note: true });
  });

  it.each([
    ["an interrupted turn without text", turn("a", "", { interrupted: true })],
    ["a failed turn", turn("a", "", { final: true, failed: true })],
    ["a final turn without text", turn("a", "", { final: true })],
  ])("hides %s (no placeholder stays behind)", (_, given) => {
    mounted.view.render([given], "Elena");
    expect(shown(mounted.list)).toEqual([]);
    expect(mounted.empty.hidden).toBe(false);
  });
});
