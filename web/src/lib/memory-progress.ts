/**
 * Honest memory state per call: how far this call's turns got, from the service's
 * `GET /memory/sessions/{session_id}/progress` (authorised by the session's memory token)
 * combined with what the browser's outbox still holds.
 *
 * A `202` from `/memory/enrich` only means "stored on the service"; the turns reach the
 * agent's memory (Zep) later, or not at all. So a call's memory is `queued` while the
 * service holds turns it has not delivered (durable there, even while it retries a failed
 * delivery: `retryAt` says when), `retrying` while turns are still only in this browser
 * because posting them failed, `failed` when turns were refused for good
 * (dead-lettered), and `saved` only when everything of the call is in memory.
 *
 * Polling is bounded: only while turns are outstanding, with backoff (1 s doubling to
 * 15 s, reset when new turns are acknowledged), never earlier than a `Retry-After`, and it
 * stops for good once the call has ended and everything is settled, or `settleTimeoutMs`
 * (10 min) after the call ended, or when the token is refused (401/404).
 *
 * ```ts
 * const progress = followCallMemory(client);   // null when the client has no memory
 * progress?.on("progress", (p) => badge(p.status, p.saved, p.queued));
 * // … when the page is done with the client: progress?.dispose(); client.dispose();
 * ```
 */

import type { CallInfo, ConnectionChange, ConnectionState } from "./call-types.js";
import { type Clock, type TimerHandle, systemClock } from "./clock.js";
import { Emitter } from "./emitter.js";
import { type FetchLike, fetchWithTimeout, globalFetch, joinUrl, retryAfterMs } from "./http.js";
import type { MemoryOutbox, SessionOutbox } from "./outbox.js";

/**
 * A call's memory: `off` (no memory for this call), `idle` (nothing to save yet),
 * `queued` (turns waiting on the service, or about to be posted, not yet in memory; while
 * the service retries a failed delivery `retryAt` says when), `retrying` (turns are only
 * in this browser: posting them failed and is retried at `retryAt`), `saved` (every turn
 * of the call is in memory), `failed` (some turns were refused for good).
 */
export type CallMemoryStatus = "off" | "idle" | "queued" | "retrying" | "saved" | "failed";

/** A snapshot of one call's memory, for the UI. */
export interface CallMemoryProgress {
  /** The call's memory session, or null before a call / when memory is off. */
  sessionId: string | null;
  status: CallMemoryStatus;
  /** Turns still in the browser, not yet acknowledged by the service. */
  unsent: number;
  /** Turns on the service waiting for delivery (including acknowledged, not yet reported). */
  queued: number;
  /** Turns in the agent's memory. */
  saved: number;
  /** Turns refused for good (dead-lettered on the service). */
  failed: number;
  /**
   * When the next attempt is due (ms since epoch): the browser's next post while
   * `retrying`, the service's next delivery attempt while `queued`; else null.
   */
  retryAt: number | null;
  /** True when nothing of the call is outstanding. */
  settled: boolean;
}

/** `GET /memory/sessions/{session_id}/progress` 200 answer. */
export interface MemoryProgressWire {
  session_id: string;
  queued: number;
  delivered: number;
  dead_lettered: number;
  retrying: boolean;
  /** Unix seconds, or null. */
  next_attempt_at: number | null;
}

/** Options of a {@link MemoryProgress}; every one but `outbox` has a default. */
export interface MemoryProgressOptions {
  /** The client's outbox (`client.memory`): the grant and what the browser still holds. */
  outbox: MemoryOutbox;
  /** Base URL relative grant URLs are resolved against (default: the outbox's, where it posts them). */
  baseUrl?: string;
  fetch?: FetchLike;
  clock?: Clock;
  /** First delay between polls (default 1000 ms); doubles while nothing changes. */
  minDelayMs?: number;
  /** Longest delay between polls (default 15000 ms). */
  maxDelayMs?: number;
  /** Stop polling this long after the call ended, settled or not (default 600000 ms). */
  settleTimeoutMs?: number;
  /** Bound on one request (default 5000 ms). */
  requestTimeoutMs?: number;
}

/** Events of a {@link MemoryProgress}. */
export interface MemoryProgressEvents extends Record<string, unknown> {
  progress: CallMemoryProgress;
}

/** The progress URL of a session, next to its grant's enrich URL (`…/enrich` → `…/sessions/{id}/progress`). */
export function progressUrl(enrichUrl: string, sessionId: string): string {
  const base = enrichUrl.replace(/\/enrich\/?(?:[?#].*)?$/, "");
  return `${base}/sessions/${encodeURIComponent(sessionId)}/progress`;
}

/** What the service said, what the browser still holds, and acknowledgements it has not counted yet. */
export interface ProgressInputs {
  server: MemoryProgressWire | null;
  lane: Pick<SessionOutbox, "unsent" | "retryAt"> | null;
  /** Turns the service acknowledged after the answer in `server` was asked for. */
  unreported: number;
}

/** Derive a call's memory status from its inputs (pure; see {@link CallMemoryStatus}). */
export function deriveProgress(sessionId: string, { server, lane, unreported }: ProgressInputs): CallMemoryProgress {
  const unsent = lane?.unsent ?? 0;
  const queued = (server?.queued ?? 0) + unreported;
  const saved = server?.delivered ?? 0;
  const failed = server?.dead_lettered ?? 0;
  const outstanding = unsent + queued;
  const posting = unsent > 0 && lane?.retryAt != null ? lane.retryAt : null;
  const delivering = queued > 0 && server?.retrying && server.next_attempt_at !== null ? server.next_attempt_at * 1000 : null;
  const retryAt = posting ?? delivering;
  let status: CallMemoryStatus;
  if (outstanding + saved + failed === 0) status = "idle";
  else if (posting !== null) status = "retrying";
  else if (outstanding > 0) status = "queued";
  else if (failed > 0) status = "failed";
  else status = "saved";
  return { sessionId, status, unsent, queued, saved, failed, retryAt, settled: outstanding === 0 };
}

/** No call's memory yet: before the first call, and while a new one is being set up. */
export const CALL_MEMORY_IDLE: Readonly<CallMemoryProgress> = Object.freeze({
  sessionId: null,
  status: "idle",
  unsent: 0,
  queued: 0,
  saved: 0,
  failed: 0,
  retryAt: null,
  settled: true,
});

/** Memory is off: the client has no outbox, or the service granted none for the call. */
export const CALL_MEMORY_OFF: Readonly<CallMemoryProgress> = Object.freeze({ ...CALL_MEMORY_IDLE, status: "off" });

/** What {@link MemoryProgress.follow} needs of a {@link VoiceClient}: its call and its `connection` events. */
export interface CallSource {
  readonly state: ConnectionState;
  readonly call: CallInfo | null;
  on(event: "connection", listener: (change: ConnectionChange) => void): () => void;
}

/** Tracks the memory of the current call and polls the service while turns are outstanding. */
export class MemoryProgress extends Emitter<MemoryProgressEvents> {
  readonly #outbox: MemoryOutbox;
  readonly #fetch: FetchLike;
  readonly #clock: Clock;
  readonly #baseUrl: string;
  readonly #minDelay: number;
  readonly #maxDelay: number;
  readonly #settleTimeout: number;
  readonly #requestTimeout: number;
  /** Removes the outbox listener and the listeners of followed clients. */
  readonly #unsubscribe: (() => void)[] = [];
  #sessionId: string | null = null;
  #off = false;
  #server: MemoryProgressWire | null = null;
  /** Acknowledged turns when the answer in `#server` was asked for. */
  #ackedAtAnswer = 0;
  #ackedSeen = 0;
  #delay: number;
  #timer: TimerHandle | null = null;
  /** When `#timer` fires (ms since epoch). */
  #timerDue = 0;
  #inFlight = false;
  #again = false;
  #stopped = false;
  #disposed = false;
  #endedAt: number | null = null;
  #generation = 0;
  #last: CallMemoryProgress = CALL_MEMORY_IDLE;
  #fingerprint = "";

  constructor(options: MemoryProgressOptions) {
    super();
    this.#outbox = options.outbox;
    this.#fetch = options.fetch ?? globalFetch;
    this.#clock = options.clock ?? systemClock;
    this.#baseUrl = options.baseUrl ?? options.outbox.baseUrl;
    this.#minDelay = options.minDelayMs ?? 1000;
    this.#maxDelay = options.maxDelayMs ?? 15_000;
    this.#settleTimeout = options.settleTimeoutMs ?? 600_000;
    this.#requestTimeout = options.requestTimeoutMs ?? 5000;
    this.#delay = this.#minDelay;
    this.#unsubscribe.push(this.#outbox.on("state", () => this.#onOutbox()));
  }

  /** The current call's memory. */
  current(): CallMemoryProgress {
    return this.#last;
  }

  /** Forget the previous call (a new one is being set up): `idle`, no polling. */
  reset(): void {
    this.#begin(null, false);
  }

  /** Follow the memory of the call with this session (null: memory is off for the call). */
  track(sessionId: string | null): void {
    if (sessionId !== null && sessionId === this.#sessionId) return;
    this.#begin(sessionId, sessionId === null);
  }

  /** The call ended: keep polling until everything is settled, at most `settleTimeoutMs`. */
  ended(): void {
    if (this.#endedAt === null) this.#endedAt = this.#clock.now();
    this.#schedule(this.#minDelay);
  }

  /**
   * Follow `client`'s calls, as every UI of the client does: {@link reset} when a call is
   * being set up (each call starts from zero), {@link track} its session once the service
   * answered (`off` when the call has no memory), {@link ended} once it ended or failed.
   * Starts from the client's current call; {@link dispose} stops following.
   */
  follow(client: CallSource): this {
    const follow = ({ state, call }: { state: ConnectionState; call: CallInfo | null }): void => {
      if (state === "microphone") this.reset();
      if (call) this.track(call.memory ? call.sessionId : null);
      if (state === "ended" || state === "failed") this.ended();
    };
    this.#unsubscribe.push(client.on("connection", follow));
    follow({ state: client.state, call: client.call });
    return this;
  }

  /** Stop polling and listening for good (a late answer is dropped, nothing is scheduled). */
  dispose(): void {
    this.#generation += 1;
    this.#disposed = true;
    this.#cancel();
    for (const remove of this.#unsubscribe.splice(0)) remove();
  }

  #begin(sessionId: string | null, off: boolean): void {
    this.#generation += 1;
    this.#cancel();
    this.#sessionId = sessionId;
    this.#off = off;
    this.#server = null;
    this.#delay = this.#minDelay;
    this.#inFlight = false;
    this.#again = false;
    this.#stopped = false;
    this.#endedAt = null;
    const lane = sessionId === null ? null : this.#outbox.session(sessionId);
    this.#ackedAtAnswer = lane?.acknowledged ?? 0;
    this.#ackedSeen = this.#ackedAtAnswer;
    this.#publish();
  }

  #lane(): SessionOutbox | null {
    return this.#sessionId === null ? null : this.#outbox.session(this.#sessionId);
  }

  #onOutbox(): void {
    const acked = this.#lane()?.acknowledged ?? 0;
    if (acked > this.#ackedSeen) {
      // New turns reached the service: ask about them soon, from the shortest delay.
      this.#ackedSeen = acked;
      this.#delay = this.#minDelay;
      this.#schedule(this.#minDelay);
    }
    this.#publish();
  }

  #schedule(delay: number): void {
    if (this.#sessionId === null || this.#stopped || this.#disposed) return;
    if (this.#inFlight) {
      this.#again = true;
      return;
    }
    const due = this.#clock.now() + delay;
    if (this.#timer !== null && this.#timerDue <= due) return; // one is due sooner already
    this.#cancel();
    const generation = this.#generation;
    this.#timerDue = due;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = null;
      if (generation === this.#generation) void this.#poll(generation);
    }, delay);
  }

  #cancel(): void {
    if (this.#timer !== null) this.#clock.clearTimeout(this.#timer);
    this.#timer = null;
  }

  async #poll(generation: number): Promise<void> {
    const sessionId = this.#sessionId;
    const lane = this.#lane();
    if (sessionId === null || !lane) return;
    this.#inFlight = true;
    this.#again = false;
    const ackedAtAsk = lane.acknowledged;
    let wait = this.#delay;
    try {
      const response = await fetchWithTimeout(
        this.#fetch,
        joinUrl(this.#baseUrl, progressUrl(lane.grant.enrichUrl, sessionId)),
        { method: "GET", headers: { Authorization: `Bearer ${lane.grant.token}` }, cache: "no-store" },
        this.#requestTimeout,
      );
      if (generation !== this.#generation) return;
      if (response.ok) {
        const answer = (await response.json()) as MemoryProgressWire;
        if (generation !== this.#generation) return;
        const changed = JSON.stringify(answer) !== JSON.stringify(this.#server);
        this.#server = answer;
        this.#ackedAtAnswer = ackedAtAsk;
        this.#delay = changed ? this.#minDelay : Math.min(this.#delay * 2, this.#maxDelay);
        wait = this.#delay;
      } else if (response.status === 401 || response.status === 403 || response.status === 404) {
        this.#stopped = true; // the token expired or memory is off: nothing more to learn
      } else {
        const floor = response.status === 429 ? retryAfterMs(response.headers.get("Retry-After"), this.#clock.now()) : undefined;
        this.#delay = Math.min(this.#delay * 2, this.#maxDelay);
        wait = Math.max(this.#delay, floor ?? 0);
      }
    } catch {
      if (generation !== this.#generation) return;
      this.#delay = Math.min(this.#delay * 2, this.#maxDelay);
      wait = this.#delay;
    } finally {
      if (generation === this.#generation) this.#inFlight = false;
    }
    this.#publish();
    const again = this.#again;
    this.#again = false;
    const expired = this.#endedAt !== null && this.#clock.now() - this.#endedAt >= this.#settleTimeout;
    if (expired) this.#stopped = true;
    if (!this.#last.settled || again) this.#schedule(again ? this.#minDelay : wait);
  }

  #publish(): void {
    let next: CallMemoryProgress;
    if (this.#sessionId === null) next = this.#off ? CALL_MEMORY_OFF : CALL_MEMORY_IDLE;
    else {
      const lane = this.#lane();
      const unreported = Math.max(0, (lane?.acknowledged ?? 0) - this.#ackedAtAnswer);
      next = deriveProgress(this.#sessionId, { server: this.#server, lane, unreported });
    }
    this.#last = next;
    const fingerprint = JSON.stringify(next);
    if (fingerprint === this.#fingerprint) return;
    this.#fingerprint = fingerprint;
    this.emit("progress", next);
  }
}

/**
 * A {@link MemoryProgress} following `client`'s calls (see {@link MemoryProgress.follow}),
 * on the client's outbox; null when the client has no memory (show {@link CALL_MEMORY_OFF}).
 * Pass the client's `fetch` and `clock` if it was given its own. Dispose it with the client.
 */
export function followCallMemory(
  client: CallSource & { readonly memory: MemoryOutbox | null },
  options: Omit<MemoryProgressOptions, "outbox"> = {},
): MemoryProgress | null {
  return client.memory ? new MemoryProgress({ ...options, outbox: client.memory }).follow(client) : null;
}
