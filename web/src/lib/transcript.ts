/**
 * Assemble transcript turns from the server events of either upstream: Azure OpenAI
 * Realtime (GA names, `oai-events` channel) or Azure AI Voice Live (the older names,
 * `voice-live-events` channel). {@link normaliseEvent} renames Voice Live's events to the GA
 * ones first, so one assembly logic serves both.
 *
 * User turns come from `conversation.item.input_audio_transcription.completed`, assistant
 * turns from `response.output_audio_transcript.done` (Voice Live:
 * `response.audio_transcript.done`), each keyed by its conversation item id.
 * User transcripts arrive asynchronously (often after the assistant has started answering),
 * so turns are ordered by the conversation's item order, which `conversation.item.added`
 * (Voice Live: `conversation.item.created`) gives through `previous_item_id`.
 *
 * Final turns are *committed* (handed to memory) in conversation order: a final turn waits
 * while an earlier turn is still being transcribed, for at most `holdMs`; after that the
 * late turn is committed whenever it completes, so nothing is lost.
 *
 * A turn that will never be completed is marked *interrupted*: its response ended
 * cancelled or incomplete (`response.done`, where the channel carries it: the user spoke
 * over the agent), or the call ended ({@link TranscriptAssembler.end}) while it was still
 * being spoken or transcribed. It keeps the text that arrived, later turns stop waiting for
 * it, and it is never committed: memory holds only what Azure completed.
 */

import { type Clock, type TimerHandle, systemClock } from "./clock.js";
import { Emitter } from "./emitter.js";
import type { Role, TranscriptTurn } from "./types.js";

/** A server event from the events data channel (only the fields we read). */
export interface ServerEvent {
  type: string;
  event_id?: string;
  item_id?: string;
  previous_item_id?: string | null;
  item?: { id?: string; type?: string; role?: string };
  response?: { status?: string; output?: { id?: string }[] };
  delta?: string;
  transcript?: string;
  text?: string;
  [key: string]: unknown;
}

/** Events of a {@link TranscriptAssembler}. */
export interface TranscriptEvents extends Record<string, unknown> {
  /** A turn appeared or changed (new text, became final, failed or was interrupted). */
  turn: TranscriptTurn;
  /** A final, non-empty turn is ready for memory; emitted once per turn, in order. */
  commit: TranscriptTurn;
}

/** Options of a {@link TranscriptAssembler}. */
export interface TranscriptOptions {
  /** Longest a final turn waits for an earlier one to be transcribed (default 8000 ms). */
  holdMs?: number;
  clock?: Clock;
}

interface Item {
  id: string;
  role: Role | undefined;
  /** False for items that will never carry a transcript (function calls, system items). */
  awaited: boolean;
  text: string;
  final: boolean;
  failed: boolean;
  /** Will never be completed (see the module comment); never committed. */
  interrupted: boolean;
  committed: boolean;
  /** Waited for longer than `holdMs`: later turns no longer wait for it. */
  overdue: boolean;
  at: string | undefined;
}

const USER_DONE = "conversation.item.input_audio_transcription.completed";
const USER_DELTA = "conversation.item.input_audio_transcription.delta";
const USER_FAILED = "conversation.item.input_audio_transcription.failed";
const ASSISTANT_DONE = new Set(["response.output_audio_transcript.done", "response.output_text.done"]);
const ASSISTANT_DELTA = new Set(["response.output_audio_transcript.delta", "response.output_text.delta"]);
const ITEM_ADDED = "conversation.item.added";
const RESPONSE_DONE = "response.done";
/** `response.done` statuses whose unfinished output items will never be completed. */
const RESPONSE_CUT = new Set(["cancelled", "incomplete", "failed"]);

/**
 * Voice Live's event names (those of the Realtime beta, which every dated Voice Live
 * api-version keeps) and the GA names they stand for. Events with the same name in both
 * vocabularies (`conversation.item.input_audio_transcription.*`, VAD, output buffer, error)
 * need no entry.
 */
export const GA_EVENT_NAMES: ReadonlyMap<string, string> = new Map([
  ["response.audio_transcript.delta", "response.output_audio_transcript.delta"],
  ["response.audio_transcript.done", "response.output_audio_transcript.done"],
  ["response.text.delta", "response.output_text.delta"],
  ["response.text.done", "response.output_text.done"],
  ["conversation.item.created", "conversation.item.added"],
]);

/** The event under its GA name (unchanged when it has one already); fields are kept as they are. */
export function normaliseEvent(event: ServerEvent): ServerEvent {
  const name = GA_EVENT_NAMES.get(event.type);
  return name === undefined ? event : { ...event, type: name };
}

/** Turns server events (either vocabulary) into ordered transcript turns and in-order memory commits. */
export class TranscriptAssembler extends Emitter<TranscriptEvents> {
  readonly #items = new Map<string, Item>();
  readonly #order: string[] = [];
  readonly #holdMs: number;
  readonly #clock: Clock;
  #blockedSince: number | null = null;
  #timer: TimerHandle | null = null;

  constructor(options: TranscriptOptions = {}) {
    super();
    this.#holdMs = options.holdMs ?? 8000;
    this.#clock = options.clock ?? systemClock;
  }

  /** Feed one server event (GA or Voice Live names); returns true when it concerned the transcript. */
  handle(received: ServerEvent): boolean {
    const event = normaliseEvent(received);
    if (event.type === ITEM_ADDED) {
      this.#added(event);
    } else if (event.type === USER_DONE) {
      this.#text(event.item_id, "user", event.transcript ?? "", true);
    } else if (event.type === USER_DELTA) {
      this.#text(event.item_id, "user", event.delta ?? "", false);
    } else if (event.type === USER_FAILED) {
      this.#failed(event.item_id);
    } else if (ASSISTANT_DONE.has(event.type)) {
      this.#text(event.item_id, "assistant", event.transcript ?? event.text ?? "", true);
    } else if (ASSISTANT_DELTA.has(event.type)) {
      this.#text(event.item_id, "assistant", event.delta ?? "", false);
    } else if (event.type === "conversation.item.deleted") {
      this.#deleted(event.item_id);
    } else if (event.type === RESPONSE_DONE) {
      this.#responseDone(event);
    } else {
      return false;
    }
    this.#walk();
    return true;
  }

  /** Every transcript turn in conversation order (partial ones included). */
  turns(): TranscriptTurn[] {
    const turns: TranscriptTurn[] = [];
    for (const id of this.#order) {
      const item = this.#items.get(id);
      if (item?.awaited && item.role) turns.push(toTurn(item));
    }
    return turns;
  }

  /** Commit every final turn not committed yet, without waiting (call on hang-up). */
  flush(): void {
    for (const id of this.#order) {
      const item = this.#items.get(id);
      if (item && item.awaited && item.final && !item.committed) this.#commit(item);
    }
    this.#clearTimer();
  }

  /**
   * The call ended: every turn still being spoken or transcribed becomes interrupted (and is
   * shown as such), then every final turn is committed, as {@link flush} does.
   */
  end(): void {
    for (const id of this.#order) {
      const item = this.#items.get(id);
      if (item) this.#interrupt(item);
    }
    this.flush();
  }

  /** Stop the hold timer; the assembler emits nothing afterwards unless fed again. */
  dispose(): void {
    this.#clearTimer();
  }

  #added(event: ServerEvent): void {
    const id = event.item?.id;
    if (!id) return;
    const role = event.item?.role;
    const isTurn = (event.item?.type ?? "message") === "message" && (role === "user" || role === "assistant");
    const item = this.#item(id);
    if (isTurn) item.role = role;
    else if (!item.role) item.awaited = false;
    this.#place(id, event.previous_item_id);
    if (item.awaited && item.role) this.emit("turn", toTurn(item));
  }

  #text(id: string | undefined, role: Role, text: string, final: boolean): void {
    if (!id) return;
    const item = this.#item(id);
    if (!this.#order.includes(id)) this.#order.push(id);
    item.role ??= role;
    item.awaited = true;
    if (item.final || item.interrupted) return; // a late delta after the end changes nothing
    if (final) {
      item.text = text.trim();
      item.final = true;
      item.at = new Date(this.#clock.now()).toISOString();
    } else {
      item.text += text;
    }
    this.emit("turn", toTurn(item));
  }

  #failed(id: string | undefined): void {
    if (!id) return;
    const item = this.#item(id);
    if (!this.#order.includes(id)) this.#order.push(id);
    item.role ??= "user";
    item.final = true;
    item.failed = true;
    this.emit("turn", toTurn(item));
  }

  /** A response that ended cancelled or incomplete interrupts its unfinished output items. */
  #responseDone(event: ServerEvent): void {
    const response = event.response;
    if (!response?.status || !RESPONSE_CUT.has(response.status)) return;
    for (const output of response.output ?? []) {
      const item = output.id === undefined ? undefined : this.#items.get(output.id);
      if (item) this.#interrupt(item);
    }
  }

  /** Mark a turn that is still in progress as interrupted (shown, never committed). */
  #interrupt(item: Item): void {
    if (item.final || item.interrupted || !item.awaited || !item.role) return;
    item.interrupted = true;
    this.emit("turn", toTurn(item));
  }

  #deleted(id: string | undefined): void {
    if (!id) return;
    const item = this.#items.get(id);
    if (item && !item.final) item.awaited = false;
  }

  #item(id: string): Item {
    let item = this.#items.get(id);
    if (!item) {
      item = {
        id,
        role: undefined,
        awaited: true,
        text: "",
        final: false,
        failed: false,
        interrupted: false,
        committed: false,
        overdue: false,
        at: undefined,
      };
      this.#items.set(id, item);
    }
    return item;
  }

  /** Put `id` right after `previousId` (first when null; unchanged/last when unknown). */
  #place(id: string, previousId: string | null | undefined): void {
    const current = this.#order.indexOf(id);
    if (previousId === undefined || (previousId !== null && !this.#order.includes(previousId))) {
      if (current < 0) this.#order.push(id);
      return;
    }
    if (current >= 0) this.#order.splice(current, 1);
    const at = previousId === null ? 0 : this.#order.indexOf(previousId) + 1;
    this.#order.splice(at, 0, id);
  }

  #commit(item: Item): void {
    item.committed = true;
    if (!item.failed && item.text && item.role) this.emit("commit", toTurn(item));
  }

  /** Commit final turns in order; wait (bounded) for earlier turns still in progress. */
  #walk(): void {
    const now = this.#clock.now();
    const pending = this.#order
      .map((id) => this.#items.get(id))
      .filter((item): item is Item => item !== undefined && item.awaited && !item.interrupted && !item.committed);
    for (let i = 0; i < pending.length; i += 1) {
      const item = pending[i] as Item;
      if (item.final) {
        this.#commit(item);
        continue;
      }
      if (item.overdue) continue;
      const laterFinal = pending.slice(i + 1).some((later) => later.final);
      if (!laterFinal) break;
      this.#blockedSince ??= now;
      const waited = now - this.#blockedSince;
      if (waited >= this.#holdMs) {
        item.overdue = true;
        this.#blockedSince = now;
        continue;
      }
      this.#schedule(this.#holdMs - waited);
      return;
    }
    this.#blockedSince = null;
    this.#clearTimer();
  }

  #schedule(ms: number): void {
    this.#clearTimer();
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null;
      this.#walk();
    }, ms);
  }

  #clearTimer(): void {
    if (this.#timer !== null) {
      this.#clock.clearTimeout(this.#timer);
      this.#timer = null;
    }
  }
}

function toTurn(item: Item): TranscriptTurn {
  const turn: TranscriptTurn = { id: item.id, role: item.role ?? "user", text: item.text, final: item.final };
  if (item.failed) turn.failed = true;
  if (item.interrupted) turn.interrupted = true;
  if (item.at) turn.at = item.at;
  return turn;
}
