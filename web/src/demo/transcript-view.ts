/**
 * The transcript on the demo page: one list item per turn, in conversation order, in a
 * scrolling region that follows the newest turn unless the reader scrolled up (scrolling
 * back to the bottom follows again).
 */

import type { TranscriptTurn } from "../lib";

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

  /** Show `turns` (partial ones in italics), reusing the items that are already there. */
  render(turns: TranscriptTurn[], agentName: string): void {
    const follow = this.#follow;
    const visible = turns.filter((turn) => !turn.failed && (turn.text || !turn.final));
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
        li.append(who, text);
      }
      li.dataset["role"] = turn.role;
      li.dataset["final"] = String(turn.final);
      (li.firstElementChild as HTMLElement).textContent = turn.role === "user" ? "You" : agentName;
      (li.lastElementChild as HTMLElement).textContent = turn.text || "…";
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
