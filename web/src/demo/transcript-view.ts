/**
 * The transcript on the demo page: one list item per turn, in conversation order, in a
 * scrolling region that follows the newest turn unless the reader scrolled up (scrolling
 * back to the bottom follows again).
 *
 * A turn is in one of three states, kept in `data-state` on its item: `partial` (still being
 * spoken or transcribed, in italics), `final` (completed: the turns the memory badge counts)
 * or `interrupted` (cut off: shown as it stands, no longer in italics, with a note that it is
 * not saved to memory, so the badge's count and the transcript agree).
 */

import type { TranscriptTurn } from "../lib";

/** The note under an interrupted turn. */
export const INTERRUPTED_NOTE = "Interrupted, not saved to memory";

/** A turn's display state (see the module comment). */
export type TurnState = "partial" | "final" | "interrupted";

/** The display state of `turn`. */
export function turnState(turn: TranscriptTurn): TurnState {
  if (turn.final) return "final";
  return turn.interrupted ? "interrupted" : "partial";
}

/** Whether `turn` has anything to show: not failed, and text unless it is still coming. */
export function shown(turn: TranscriptTurn): boolean {
  return !turn.failed && (turn.text !== "" || turnState(turn) === "partial");
}

/** How close to the bottom (px) still counts as "at the newest turn". */
const FOLLOW_SLACK_PX = 24;

/** Whether a scroll box shows its end (within the slack). */
export function atBottom(box: { scrollTop: number; scrollHeight: number; clientHeight: number }): boolean {
  return box.scrollHeight - box.scrollTop - box.clientHeight <= FOLLOW_SLACK_PX;
}

/** Renders turns into `list` inside the scrolling `region`. */
export class TranscriptView {
  readonly #region: HTMLElement;
  readonly #list: HTMLOListElement;
  readonly #empty: HTMLElement;
  #follow = true;

  constructor(region: HTMLElement, list: HTMLOListElement, empty: HTMLElement) {
    this.#region = region;
    this.#list = list;
    this.#empty = empty;
    region.addEventListener("scroll", () => {
      this.#follow = atBottom(region);
    });
  }

  /** Follow the newest turn again (a new call). */
  follow(): void {
    this.#follow = true;
    this.#scrollToEnd();
  }

  /** Show `turns` (partial ones in italics, interrupted ones noted), reusing the items already there. */
  render(turns: TranscriptTurn[], agentName: string): void {
    const follow = this.#follow;
    const visible = turns.filter(shown);
    this.#empty.hidden = visible.length > 0;
    const existing = new Map<string, HTMLLIElement>();
    for (const li of this.#list.querySelectorAll<HTMLLIElement>("li[data-item-id]")) {
      existing.set(li.dataset["itemId"] ?? "", li);
    }
    const keep = new Set<string>();
    let previous: HTMLLIElement | null = null;
    for (const turn of visible) {
      keep.add(turn.id);
      let li = existing.get(turn.id);
      if (!li) {
        li = document.createElement("li");
        li.className = "turn";
        li.dataset["itemId"] = turn.id;
        const who = document.createElement("span");
        who.className = "turn-who";
        const text = document.createElement("p");
        text.className = "turn-text";
        const note = document.createElement("span");
        note.className = "turn-note";
        note.textContent = INTERRUPTED_NOTE;
        li.append(who, text, note);
      }
      const state = turnState(turn);
      li.dataset["role"] = turn.role;
      li.dataset["final"] = String(turn.final);
      li.dataset["state"] = state;
      (li.querySelector(".turn-who") as HTMLElement).textContent = turn.role === "user" ? "You" : agentName;
      (li.querySelector(".turn-text") as HTMLElement).textContent = turn.text || "…";
      (li.querySelector(".turn-note") as HTMLElement).hidden = state !== "interrupted";
      const expectedPosition: ChildNode | null = previous ? previous.nextSibling : this.#list.firstChild;
      if (expectedPosition !== li) this.#list.insertBefore(li, expectedPosition);
      previous = li;
    }
    for (const [id, li] of existing) if (!keep.has(id)) li.remove();
    if (follow) this.#scrollToEnd();
  }

  #scrollToEnd(): void {
    this.#region.scrollTop = this.#region.scrollHeight;
    this.#follow = true;
  }
}
