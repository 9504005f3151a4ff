/**
 * The memory outbox: delivers transcript turns to `POST /memory/enrich`, never in the way
 * of audio.
 *
 * - Turns are batched per session (one lane per session, in conversation order) and posted
 *   with the session's memory token as a bearer token.
 * - Transport errors, timeouts, 408, 429 and 5xx are retried with capped exponential
 *   backoff and jitter; `Retry-After` is honoured. A refused token (401/403) or a turn the
 *   service rejects (other 4xx) is dropped and counted as failed; a rejected batch is split
 *   first, so one bad turn never takes the others down with it.
 * - Every unacknowledged turn is kept in local storage, so a reload delivers what the
 *   previous page could not ({@link MemoryOutbox.restore}).
 * - On page hide, {@link MemoryOutbox.beacon} hands the unsent turns to
 *   `navigator.sendBeacon` as `text/plain` with the token in the body (no CORS preflight).
 *   Beacons are fire-and-forget, so the turns stay stored until a real `202` confirms them;
 *   the service deduplicates by (session id, message id), so re-sending is always safe.
 */

import { type BackoffPolicy, defaultBackoff, isRetryableStatus, retryDelayMs } from "./backoff.js";
import { type Clock, type TimerHandle, systemClock } from "./clock.js";
import { Emitter } from "./emitter.js";
import { type FetchLike, fetchWithTimeout, globalFetch, joinUrl, retryAfterMs } from "./http.js";
import { type StorageLike, defaultStorage } from "./storage.js";
import type { EnrichMessage, EnrichRequest, MemoryGrantWire } from "./types.js";

/** Where and with what one session's turns are posted. */
export interface MemoryGrant {
  sessionId: string;
  /** Absolute URL, or a path resolved against the outbox's `baseUrl`. */
  enrichUrl: string;
  token: string;
  /** Unix seconds; informative (the service decides). */
  expiresAt: number;
}

/**
 * What the UI shows about memory:
 * `idle` (nothing to do yet), `pending` (turns waiting for their batch), `saving` (a post is
 * in flight), `saved` (every turn so far was accepted), `retrying` (the last post failed and
 * a retry is scheduled), `failed` (turns were refused for good; see `lastError`).
 */
export type MemoryStatus = "idle" | "pending" | "saving" | "saved" | "retrying" | "failed";

/** A snapshot of the outbox for the UI. */
export interface MemoryState {
  status: MemoryStatus;
  /** Turns not yet acknowledged by the service (across sessions, restored ones included). */
  pending: number;
  /** Turns the service acknowledged since this page loaded. */
  saved: number;
  /** Turns dropped for good since this page loaded. */
  failed: number;
  /** When the next retry happens (ms since epoch), while `status` is `retrying`. */
  retryAt: number | null;
  /** The last failure in plain words, cleared by the next success. */
  lastError: string | null;
}

/** One session's lane, as {@link MemoryOutbox.session} reports it (for per-call progress). */
export interface SessionOutbox {
  grant: MemoryGrant;
  /** Turns not yet acknowledged by the service. */
  unsent: number;
  /** Turns the service acknowledged (202) since this page loaded. */
  acknowledged: number;
  /** When the next post is retried (ms since epoch), or null. */
  retryAt: number | null;
}

/** Events of a {@link MemoryOutbox}. */
export interface OutboxEvents extends Record<string, unknown> {
  /** The state changed. */
  state: MemoryState;
}

/** Options of a {@link MemoryOutbox}; every one has a browser default. */
export interface OutboxOptions {
  /** Where unsent turns survive a reload; `localStorage` by default, null for none. */
  storage?: StorageLike | null;
  /** Prefix of the storage keys (one key per session). */
  storageKeyPrefix?: string;
  fetch?: FetchLike;
  /** `navigator.sendBeacon` by default; null where there is none. */
  sendBeacon?: ((url: string, data: string) => boolean) | null;
  /** Base URL that relative `enrichUrl`s are resolved against (default: this origin). */
  baseUrl?: string;
  /** How long a new turn waits for others to share its post (default 300 ms). */
  batchDelayMs?: number;
  /** Most turns in one post (default 50; the service accepts 100). */
  maxBatch?: number;
  /** Bound on one post (default 10000 ms). */
  requestTimeoutMs?: number;
  backoff?: Partial<BackoffPolicy>;
  clock?: Clock;
  random?: () => number;
}

/** Limits of `POST /memory/enrich` (src/engram_voice/memory/schemas.py). */
export const ENRICH_LIMITS = {
  maxMessages: 100,
  maxTextChars: 10_000,
  maxIdChars: 128,
  idPattern: /^[A-Za-z0-9_.:-]+$/,
  /** Stay well below sendBeacon's 64 KiB budget per beacon. */
  maxBeaconBytes: 48 * 1024,
  /** Stay well below the service's 256 KiB body limit. */
  maxPostBytes: 192 * 1024,
} as const;

const DEFAULT_PREFIX = "engram-voice.outbox.";
const KEEPALIVE_MAX_BYTES = 60 * 1024;

interface Lane {
  grant: MemoryGrant;
  /** Unacknowledged turns, in the order they were added. */
  queue: EnrichMessage[];
  acked: Set<string>;
  beaconed: Set<string>;
  sending: boolean;
  attempt: number;
  retryAt: number | null;
  timer: TimerHandle | null;
  /** Lowered while isolating a turn the service rejects. */
  batchLimit: number;
}

interface Stored {
  v: 1;
  grant: MemoryGrant;
  messages: EnrichMessage[];
}

/** Batches, persists and delivers transcript turns to the memory endpoint. */
export class MemoryOutbox extends Emitter<OutboxEvents> {
  readonly #lanes = new Map<string, Lane>();
  readonly #storage: StorageLike | null;
  readonly #prefix: string;
  readonly #fetch: FetchLike;
  readonly #beacon: ((url: string, data: string) => boolean) | null;
  readonly #baseUrl: string;
  readonly #batchDelayMs: number;
  readonly #maxBatch: number;
  readonly #timeoutMs: number;
  readonly #backoff: BackoffPolicy;
  readonly #clock: Clock;
  readonly #random: () => number;
  #saved = 0;
  #failed = 0;
  #lastError: string | null = null;
  #lastState = "";
  #disposed = false;

  constructor(options: OutboxOptions = {}) {
    super();
    this.#storage = options.storage === undefined ? defaultStorage() : options.storage;
    this.#prefix = options.storageKeyPrefix ?? DEFAULT_PREFIX;
    this.#fetch = options.fetch ?? globalFetch;
    this.#beacon = options.sendBeacon === undefined ? defaultBeacon() : options.sendBeacon;
    this.#baseUrl = options.baseUrl ?? "";
    this.#batchDelayMs = options.batchDelayMs ?? 300;
    this.#maxBatch = Math.min(options.maxBatch ?? 50, ENRICH_LIMITS.maxMessages);
    this.#timeoutMs = options.requestTimeoutMs ?? 10_000;
    this.#backoff = { ...defaultBackoff, ...options.backoff };
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? Math.random;
  }

  /** The base URL relative grant URLs are resolved against (empty: this page's origin). */
  get baseUrl(): string {
    return this.#baseUrl;
  }

  /** Convert the `memory` object of a session answer into a {@link MemoryGrant}. */
  static grantFrom(sessionId: string, wire: MemoryGrantWire): MemoryGrant {
    return { sessionId, enrichUrl: wire.enrich_url, token: wire.token, expiresAt: wire.expires_at };
  }

  /**
   * Load the turns earlier pages left in storage and start delivering them.
   * Returns how many turns were restored.
   */
  restore(): number {
    if (!this.#storage) return 0;
    let restored = 0;
    for (const key of this.#storageKeys()) {
      const stored = this.#read(key);
      if (!stored) {
        this.#removeKey(key);
        continue;
      }
      const lane = this.#lane(stored.grant);
      for (const message of stored.messages) {
        if (!lane.acked.has(message.id) && !lane.queue.some((m) => m.id === message.id)) {
          lane.queue.push(message);
          restored += 1;
        }
      }
      this.#pump(lane);
    }
    this.#publish();
    return restored;
  }

  /** Register the grant of a new session; turns of that session can then be added. */
  open(grant: MemoryGrant): void {
    const lane = this.#lane(grant);
    lane.grant = grant;
  }

  /**
   * Queue one turn of `sessionId` (its grant must have been {@link open}ed). The turn is
   * stored at once and posted after a short batching delay. Returns false when the turn
   * cannot be queued (unknown session, or an id the service would refuse).
   */
  add(sessionId: string, message: EnrichMessage): boolean {
    const lane = this.#lanes.get(sessionId);
    const clean = sanitize(message);
    if (!lane || this.#disposed) return false;
    if (!clean) {
      if (typeof message.text !== "string" || !message.text.trim()) return false; // nothing to save
      this.#failed += 1;
      this.#lastError = `A turn with an unusable id (${JSON.stringify(message.id).slice(0, 40)}) was not saved.`;
      this.#publish();
      return false;
    }
    if (lane.acked.has(clean.id) || lane.queue.some((m) => m.id === clean.id)) return true;
    lane.queue.push(clean);
    this.#persist(lane);
    if (!lane.sending && lane.retryAt === null && lane.timer === null) {
      lane.timer = this.#clock.setTimeout(() => {
        lane.timer = null;
        this.#pump(lane);
      }, this.#batchDelayMs);
    }
    this.#publish();
    return true;
  }

  /** Post every waiting turn now (skipping the batching delay, not a requested backoff). */
  flush(): void {
    for (const lane of this.#lanes.values()) {
      if (lane.retryAt !== null) continue;
      this.#cancelTimer(lane);
      this.#pump(lane);
    }
  }

  /** Retry now, ignoring backoff (e.g. when the browser comes back online). */
  retryNow(): void {
    for (const lane of this.#lanes.values()) {
      lane.retryAt = null;
      this.#cancelTimer(lane);
      this.#pump(lane);
    }
    this.#publish();
  }

  /**
   * Hand every unsent turn to `navigator.sendBeacon` (call on `pagehide` and when the page
   * becomes hidden). The turns stay stored until a normal post confirms them. Returns how
   * many turns were handed over.
   */
  beacon(): number {
    if (!this.#beacon) return 0;
    let handed = 0;
    for (const lane of this.#lanes.values()) {
      const fresh = lane.queue.filter((m) => !lane.beaconed.has(m.id));
      for (const chunk of chunks(lane, fresh, this.#maxBatch, ENRICH_LIMITS.maxBeaconBytes, true)) {
        const body: EnrichRequest = { session_id: lane.grant.sessionId, messages: chunk, token: lane.grant.token };
        let queued = false;
        try {
          queued = this.#beacon(this.#url(lane), JSON.stringify(body));
        } catch {
          queued = false;
        }
        if (!queued) break;
        for (const m of chunk) lane.beaconed.add(m.id);
        handed += chunk.length;
      }
    }
    return handed;
  }

  /** The current state (also emitted as `state` whenever it changes). */
  state(): MemoryState {
    let pending = 0;
    let retryAt: number | null = null;
    let sending = false;
    for (const lane of this.#lanes.values()) {
      pending += lane.queue.length;
      sending ||= lane.sending;
      if (lane.retryAt !== null) retryAt = retryAt === null ? lane.retryAt : Math.min(retryAt, lane.retryAt);
    }
    let status: MemoryStatus = "idle";
    if (retryAt !== null) status = "retrying";
    else if (sending) status = "saving";
    else if (pending > 0) status = "pending";
    else if (this.#lastError !== null) status = "failed";
    else if (this.#saved > 0) status = "saved";
    return { status, pending, saved: this.#saved, failed: this.#failed, retryAt, lastError: this.#lastError };
  }

  /** One session's lane (grant, unsent and acknowledged turns), or null when unknown. */
  session(sessionId: string): SessionOutbox | null {
    const lane = this.#lanes.get(sessionId);
    if (!lane) return null;
    return { grant: lane.grant, unsent: lane.queue.length, acknowledged: lane.acked.size, retryAt: lane.retryAt };
  }

  /** Stop every timer; stored turns stay for the next page. */
  dispose(): void {
    this.#disposed = true;
    for (const lane of this.#lanes.values()) {
      this.#cancelTimer(lane);
      lane.retryAt = null;
    }
  }

  #lane(grant: MemoryGrant): Lane {
    let lane = this.#lanes.get(grant.sessionId);
    if (!lane) {
      lane = {
        grant,
        queue: [],
        acked: new Set(),
        beaconed: new Set(),
        sending: false,
        attempt: 0,
        retryAt: null,
        timer: null,
        batchLimit: this.#maxBatch,
      };
      this.#lanes.set(grant.sessionId, lane);
    }
    return lane;
  }

  #url(lane: Lane): string {
    return joinUrl(this.#baseUrl, lane.grant.enrichUrl);
  }

  /** Send the next batch of `lane` unless one is in flight or a retry is scheduled. */
  #pump(lane: Lane): void {
    if (this.#disposed || lane.sending || lane.retryAt !== null || lane.queue.length === 0) return;
    const [batch] = chunks(lane, lane.queue, lane.batchLimit, ENRICH_LIMITS.maxPostBytes, false);
    if (!batch || batch.length === 0) return;
    lane.sending = true;
    this.#publish();
    void this.#post(lane, batch).finally(() => {
      lane.sending = false;
      this.#publish();
      if (lane.retryAt === null) this.#pump(lane);
    });
  }

  async #post(lane: Lane, batch: EnrichMessage[]): Promise<void> {
    const body = JSON.stringify({ session_id: lane.grant.sessionId, messages: batch } satisfies EnrichRequest);
    let response: Response;
    try {
      response = await fetchWithTimeout(
        this.#fetch,
        this.#url(lane),
        {
          method: "POST",
          headers: { "Content-Type": "application/json", Authorization: `Bearer ${lane.grant.token}` },
          body,
          keepalive: body.length < KEEPALIVE_MAX_BYTES,
          cache: "no-store",
        },
        this.#timeoutMs,
      );
    } catch {
      this.#retryLater(lane, undefined, "Memory service unreachable; will retry.");
      return;
    }
    if (response.ok) {
      this.#acknowledge(lane, batch);
      return;
    }
    if (isRetryableStatus(response.status)) {
      const wait = retryAfterMs(response.headers.get("Retry-After"), this.#clock.now());
      this.#retryLater(lane, wait, `Memory service answered ${response.status}; will retry.`);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      this.#drop(lane, [...lane.queue], "The memory token was refused (expired?); unsaved turns were dropped.");
      return;
    }
    if (batch.length > 1) {
      lane.batchLimit = Math.max(1, Math.floor(batch.length / 2));
      return;
    }
    this.#drop(lane, batch, `The memory service refused a turn (${response.status}).`);
  }

  #acknowledge(lane: Lane, batch: EnrichMessage[]): void {
    const ids = new Set(batch.map((m) => m.id));
    lane.queue = lane.queue.filter((m) => !ids.has(m.id));
    for (const id of ids) {
      lane.acked.add(id);
      lane.beaconed.delete(id);
    }
    lane.attempt = 0;
    lane.batchLimit = this.#maxBatch;
    this.#saved += batch.length;
    this.#lastError = null;
    this.#persist(lane);
  }

  #drop(lane: Lane, batch: EnrichMessage[], reason: string): void {
    const ids = new Set(batch.map((m) => m.id));
    lane.queue = lane.queue.filter((m) => !ids.has(m.id));
    lane.batchLimit = this.#maxBatch;
    lane.attempt = 0;
    this.#failed += batch.length;
    this.#lastError = reason;
    this.#persist(lane);
  }

  #retryLater(lane: Lane, wait: number | undefined, reason: string): void {
    lane.attempt += 1;
    const delay = retryDelayMs(lane.attempt, this.#backoff, wait, this.#random);
    lane.retryAt = this.#clock.now() + delay;
    this.#lastError = reason;
    this.#cancelTimer(lane);
    lane.timer = this.#clock.setTimeout(() => {
      lane.timer = null;
      lane.retryAt = null;
      this.#pump(lane);
      this.#publish();
    }, delay);
  }

  #cancelTimer(lane: Lane): void {
    if (lane.timer !== null) {
      this.#clock.clearTimeout(lane.timer);
      lane.timer = null;
    }
  }

  #persist(lane: Lane): void {
    if (!this.#storage) return;
    const key = this.#prefix + lane.grant.sessionId;
    try {
      if (lane.queue.length === 0) {
        this.#storage.removeItem(key);
      } else {
        const stored: Stored = { v: 1, grant: lane.grant, messages: lane.queue };
        this.#storage.setItem(key, JSON.stringify(stored));
      }
    } catch {
      // Storage full or blocked: the turns are still delivered from memory while the page lives.
    }
  }

  #storageKeys(): string[] {
    const keys: string[] = [];
    if (!this.#storage) return keys;
    try {
      for (let i = 0; i < this.#storage.length; i += 1) {
        const key = this.#storage.key(i);
        if (key?.startsWith(this.#prefix)) keys.push(key);
      }
    } catch {
      return [];
    }
    return keys;
  }

  #read(key: string): Stored | null {
    try {
      const raw = this.#storage?.getItem(key);
      if (!raw) return null;
      const value = JSON.parse(raw) as Partial<Stored>;
      const grant = value.grant;
      if (
        value.v !== 1 ||
        !grant ||
        typeof grant.sessionId !== "string" ||
        typeof grant.token !== "string" ||
        typeof grant.enrichUrl !== "string" ||
        !Array.isArray(value.messages)
      ) {
        return null;
      }
      const messages = value.messages.map(sanitize).filter((m): m is EnrichMessage => m !== null);
      return { v: 1, grant, messages };
    } catch {
      return null;
    }
  }

  #removeKey(key: string): void {
    try {
      this.#storage?.removeItem(key);
    } catch {
      // ignore: nothing else to do with a broken entry
    }
  }

  #publish(): void {
    const state = this.state();
    const fingerprint = JSON.stringify(state);
    if (fingerprint === this.#lastState) return;
    this.#lastState = fingerprint;
    this.emit("state", state);
  }
}

/** Validate a turn against the service's limits; long text is cut, bad ids refused. */
function sanitize(message: unknown): EnrichMessage | null {
  if (typeof message !== "object" || message === null) return null;
  const { id, role, text, at } = message as Partial<EnrichMessage>;
  if (typeof id !== "string" || id.length > ENRICH_LIMITS.maxIdChars || !ENRICH_LIMITS.idPattern.test(id)) return null;
  if (role !== "user" && role !== "assistant") return null;
  if (typeof text !== "string") return null;
  const trimmed = text.trim();
  if (!trimmed) return null;
  const points = Array.from(trimmed);
  const clean: EnrichMessage = {
    id,
    role,
    text: points.length > ENRICH_LIMITS.maxTextChars ? points.slice(0, ENRICH_LIMITS.maxTextChars).join("") : trimmed,
  };
  if (typeof at === "string" && !Number.isNaN(Date.parse(at))) clean.at = at;
  return clean;
}

/** Split `messages` into posts of at most `max` turns and about `maxBytes` of JSON. */
function chunks(lane: Lane, messages: EnrichMessage[], max: number, maxBytes: number, withToken: boolean): EnrichMessage[][] {
  const overhead = 64 + lane.grant.sessionId.length + (withToken ? lane.grant.token.length : 0);
  const result: EnrichMessage[][] = [];
  let current: EnrichMessage[] = [];
  let size = overhead;
  for (const message of messages) {
    const bytes = new TextEncoder().encode(JSON.stringify(message)).length + 1;
    if (current.length > 0 && (current.length >= max || size + bytes > maxBytes)) {
      result.push(current);
      current = [];
      size = overhead;
    }
    current.push(message);
    size += bytes;
  }
  if (current.length > 0) result.push(current);
  return result;
}

function defaultBeacon(): ((url: string, data: string) => boolean) | null {
  const nav = (globalThis as { navigator?: Navigator }).navigator;
  if (!nav || typeof nav.sendBeacon !== "function") return null;
  return (url, data) => nav.sendBeacon(url, data);
}
