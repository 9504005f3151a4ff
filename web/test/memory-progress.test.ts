import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { CallInfo, ConnectionChange, ConnectionState } from "../src/lib/call-types";
import { Emitter } from "../src/lib/emitter";
import {
  type CallMemoryProgress,
  type MemoryProgressWire,
  type ProgressInputs,
  MemoryProgress,
  deriveProgress,
  followCallMemory,
  progressUrl,
} from "../src/lib/memory-progress";
import { type MemoryGrant, MemoryOutbox } from "../src/lib/outbox";
import { type Seen, accepted, networkDown, problem, scriptedFetch } from "./helpers";

const grant = (sessionId: string): MemoryGrant => ({ sessionId, enrichUrl: "/memory/enrich", token: `tok-${sessionId}`, expiresAt: 2_000_000_000 });
const wire = (over: Partial<MemoryProgressWire> = {}): MemoryProgressWire => ({
  session_id: "vs_1",
  queued: 0,
  delivered: 0,
  dead_lettered: 0,
  retrying: false,
  next_attempt_at: null,
  ...over,
});
const json = (body: unknown, status = 200): Response => new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

/** A service stand-in: enrich accepts; progress answers whatever `state.answer` says now. */
function service(): { fetch: (input: string, init?: RequestInit) => Promise<Response>; seen: Seen[]; progress: () => Seen[]; state: { answer: Response | Error } } {
  const state: { answer: Response | Error } = { answer: json(wire()) };
  const { fetch, seen } = scriptedFetch((request) => (request.url.endsWith("/memory/enrich") ? accepted() : state.answer));
  return { fetch, seen, progress: () => seen.filter((s) => s.url.includes("/progress")), state };
}

function setup(): { box: MemoryOutbox; tracker: MemoryProgress; states: CallMemoryProgress[]; svc: ReturnType<typeof service> } {
  const svc = service();
  const box = new MemoryOutbox({ baseUrl: "http://127.0.0.1:8000", fetch: svc.fetch, storage: null, sendBeacon: null, random: () => 0.5 });
  const tracker = new MemoryProgress({ outbox: box, baseUrl: "http://127.0.0.1:8000", fetch: svc.fetch });
  const states: CallMemoryProgress[] = [];
  tracker.on("progress", (p) => states.push(p));
  return { box, tracker, states, svc };
}

/** The part of a VoiceClient that MemoryProgress.follow listens to, driven by the test. */
class FakeCalls extends Emitter<{ connection: ConnectionChange }> {
  state: ConnectionState = "idle";
  call: CallInfo | null = null;
  constructor(readonly memory: MemoryOutbox | null) {
    super();
  }
  /** The client moved to `state` with `call`. */
  go(state: ConnectionState, call: CallInfo | null = this.call): void {
    this.state = state;
    this.call = call;
    this.emit("connection", { state, call });
  }
}

const callInfo = (sessionId: string, memory = true): CallInfo => ({
  callId: `rc_${sessionId}`,
  sessionId,
  conversationId: "cv_1",
  agent: { id: "elena", name: "Elena", voice: "alloy" },
  upstream: "voice-live",
  expiresAt: null,
  memory,
});

describe("deriveProgress", () => {
  const none: ProgressInputs = { server: null, lane: null, unreported: 0 };
  it.each<[string, ProgressInputs, Partial<CallMemoryProgress>]>([
    ["nothing yet", none, { status: "idle", settled: true }],
    ["turns only in the browser", { ...none, lane: { unsent: 2, retryAt: null } }, { status: "queued", unsent: 2, settled: false }],
    ["stored on the service, not delivered", { ...none, server: wire({ queued: 3 }) }, { status: "queued", queued: 3 }],
    ["acknowledged after the last answer was asked for", { server: wire({ delivered: 2 }), lane: { unsent: 0, retryAt: null }, unreported: 2 }, { status: "queued", queued: 2, saved: 2 }],
    ["every turn delivered", { ...none, server: wire({ delivered: 4 }) }, { status: "saved", saved: 4, settled: true }],
    ["the service retries a delivery (turns safe there)", { ...none, server: wire({ queued: 1, delivered: 3, retrying: true, next_attempt_at: 1000 }) }, { status: "queued", retryAt: 1_000_000 }],
    ["the browser retries a post (turns only here)", { ...none, lane: { unsent: 1, retryAt: 5000 } }, { status: "retrying", retryAt: 5000 }],
    ["the browser retries while the service holds others", { ...none, server: wire({ queued: 2 }), lane: { unsent: 1, retryAt: 5000 } }, { status: "retrying", queued: 2, unsent: 1 }],
    ["refused turns, nothing outstanding", { ...none, server: wire({ delivered: 2, dead_lettered: 1 }) }, { status: "failed", failed: 1, saved: 2 }],
    ["refused turns while others are queued", { ...none, server: wire({ queued: 1, dead_lettered: 1 }) }, { status: "queued" }],
  ])("%s", (_, inputs, expected) => {
    expect(deriveProgress("vs_1", inputs)).toMatchObject(expected);
  });

  it("never says saved while anything of the call is outstanding", () => {
    for (const unsent of [0, 1]) {
      for (const queued of [0, 1]) {
        for (const unreported of [0, 1]) {
          for (const delivered of [0, 3]) {
            const p = deriveProgress("vs_1", { server: wire({ queued, delivered }), lane: { unsent, retryAt: null }, unreported });
            expect(p.status === "saved").toBe(unsent + queued + unreported === 0 && delivered > 0);
          }
        }
      }
    }
  });
});

describe("progressUrl", () => {
  it.each([
    ["/memory/enrich", "/memory/sessions/vs_1/progress"],
    ["https://voice.example.com/memory/enrich", "https://voice.example.com/memory/sessions/vs_1/progress"],
    ["/api/memory/enrich/", "/api/memory/sessions/vs_1/progress"],
  ])("puts the progress of %s next to it", (enrich, expected) => {
    expect(progressUrl(enrich, "vs_1")).toBe(expected);
  });
});

describe("MemoryProgress", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("reads queued after the 202 and saved only once the service reports the turns delivered", async () => {
    const { box, tracker, states, svc } = setup();
    box.open(grant("vs_1"));
    tracker.track("vs_1");
    box.add("vs_1", { id: "item_1", role: "user", text: "hello" });
    box.add("vs_1", { id: "item_2", role: "assistant", text: "hi" });
    expect(tracker.current()).toMatchObject({ status: "queued", unsent: 2 });
    await vi.advanceTimersByTimeAsync(300); // the outbox posts; 202
    expect(tracker.current()).toMatchObject({ status: "queued", unsent: 0, queued: 2 });

    svc.state.answer = json(wire({ queued: 2 })); // Zep is down: stored, not delivered
    await vi.advanceTimersByTimeAsync(1000);
    expect(svc.progress()).toHaveLength(1);
    expect(svc.progress()[0]?.url).toBe("http://127.0.0.1:8000/memory/sessions/vs_1/progress");
    expect(svc.progress()[0]?.headers["authorization"]).toBe("Bearer tok-vs_1");
    expect(tracker.current()).toMatchObject({ status: "queued", queued: 2 });

    svc.state.answer = json(wire({ delivered: 2 }));
    await vi.advanceTimersByTimeAsync(2000);
    expect(tracker.current()).toMatchObject({ status: "saved", saved: 2, queued: 0, settled: true });
    expect(states.some((s) => s.status === "saved" && s.queued > 0)).toBe(false);
  });

  it("backs off while nothing changes, and stops once the ended call is settled", async () => {
    const { box, tracker, svc } = setup();
    box.open(grant("vs_1"));
    tracker.track("vs_1");
    box.add("vs_1", { id: "item_1", role: "user", text: "hello" });
    await vi.advanceTimersByTimeAsync(300);
    svc.state.answer = json(wire({ queued: 1 }));
    const times: number[] = [];
    const start = Date.now();
    for (let i = 0; i < 8; i += 1) {
      const before = svc.progress().length;
      while (svc.progress().length === before) await vi.advanceTimersByTimeAsync(250);
      times.push(Date.now() - start);
    }
    const gaps = times.map((t, i) => t - (i === 0 ? 0 : (times[i - 1] ?? 0)));
    // First poll 1 s after the ack; the answer then stays the same: 1, 2, 4, 8, 15 s cap.
    expect(gaps.slice(2)).toEqual([2000, 4000, 8000, 15_000, 15_000, 15_000]);

    tracker.ended();
    svc.state.answer = json(wire({ delivered: 1 }));
    await vi.advanceTimersByTimeAsync(1000);
    expect(tracker.current().status).toBe("saved");
    const polls = svc.progress().length;
    await vi.advanceTimersByTimeAsync(3_600_000);
    expect(svc.progress()).toHaveLength(polls);
  });

  it("gives up at most settleTimeoutMs after the call ended, even with turns still queued", async () => {
    const { box, tracker, svc } = setup();
    box.open(grant("vs_1"));
    tracker.track("vs_1");
    box.add("vs_1", { id: "item_1", role: "user", text: "hello" });
    await vi.advanceTimersByTimeAsync(300);
    svc.state.answer = json(wire({ queued: 1 }));
    tracker.ended();
    await vi.advanceTimersByTimeAsync(600_000 + 15_000);
    const polls = svc.progress().length;
    expect(polls).toBeLessThan(60);
    await vi.advanceTimersByTimeAsync(3_600_000);
    expect(svc.progress()).toHaveLength(polls);
    expect(tracker.current().status).toBe("queued");
  });

  it.each([
    ["a refused token", problem(401, "unauthenticated")],
    ["another session's token", problem(404, "not_found")],
  ])("stops polling on %s", async (_, answer) => {
    const { box, tracker, svc } = setup();
    box.open(grant("vs_1"));
    tracker.track("vs_1");
    svc.state.answer = answer;
    box.add("vs_1", { id: "item_1", role: "user", text: "hello" });
    await vi.advanceTimersByTimeAsync(60_000);
    expect(svc.progress()).toHaveLength(1);
  });

  it("waits at least Retry-After when rate-limited and backs off on network errors", async () => {
    const { box, tracker, svc } = setup();
    box.open(grant("vs_1"));
    tracker.track("vs_1");
    svc.state.answer = problem(429, "rate_limited", { "Retry-After": "12" });
    box.add("vs_1", { id: "item_1", role: "user", text: "hello" });
    await vi.advanceTimersByTimeAsync(1300);
    expect(svc.progress()).toHaveLength(1);
    svc.state.answer = networkDown();
    await vi.advanceTimersByTimeAsync(11_000);
    expect(svc.progress()).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(svc.progress()).toHaveLength(2);
    expect(tracker.current().status).toBe("queued");
  });

  it("starts each call from zero and ignores the previous call's late answers", async () => {
    const { box, tracker, svc } = setup();
    box.open(grant("vs_1"));
    tracker.track("vs_1");
    box.add("vs_1", { id: "item_1", role: "user", text: "one" });
    box.add("vs_1", { id: "item_2", role: "assistant", text: "two" });
    await vi.advanceTimersByTimeAsync(300);
    svc.state.answer = json(wire({ delivered: 2 }));
    await vi.advanceTimersByTimeAsync(1000);
    expect(tracker.current()).toMatchObject({ status: "saved", saved: 2 });

    tracker.reset();
    expect(tracker.current()).toMatchObject({ status: "idle", saved: 0, sessionId: null });
    box.open(grant("vs_2"));
    tracker.track("vs_2");
    expect(tracker.current()).toMatchObject({ status: "idle", saved: 0, sessionId: "vs_2" });
    box.add("vs_2", { id: "item_9", role: "user", text: "new call" });
    expect(tracker.current()).toMatchObject({ status: "queued", unsent: 1, saved: 0 });
    tracker.track(null);
    expect(tracker.current().status).toBe("off");
  });
});

describe("followCallMemory", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("is null without an outbox, and otherwise resets at each call, tracks its session (off without memory) and stops on dispose", async () => {
    expect(followCallMemory(new FakeCalls(null))).toBeNull();
    const svc = service();
    const box = new MemoryOutbox({ baseUrl: "http://127.0.0.1:8000", fetch: svc.fetch, storage: null, sendBeacon: null });
    const calls = new FakeCalls(box);
    const progress = followCallMemory(calls, { fetch: svc.fetch });
    expect(progress?.current()).toMatchObject({ sessionId: null, status: "idle" });

    calls.go("microphone", null);
    box.open(grant("vs_1"));
    calls.go("connecting", callInfo("vs_1"));
    box.add("vs_1", { id: "item_1", role: "user", text: "hello" });
    await vi.advanceTimersByTimeAsync(300);
    svc.state.answer = json(wire({ delivered: 1 }));
    calls.go("ended");
    await vi.advanceTimersByTimeAsync(1000);
    expect(progress?.current()).toMatchObject({ sessionId: "vs_1", status: "saved", saved: 1 });
    expect(svc.progress()[0]?.url).toBe("http://127.0.0.1:8000/memory/sessions/vs_1/progress"); // the outbox's base URL

    calls.go("microphone", null);
    expect(progress?.current()).toMatchObject({ sessionId: null, status: "idle", saved: 0 });
    calls.go("connecting", callInfo("vs_2", false));
    expect(progress?.current().status).toBe("off");

    progress?.dispose();
    calls.go("microphone", null);
    box.open(grant("vs_3"));
    calls.go("connecting", callInfo("vs_3"));
    expect(progress?.current().status).toBe("off"); // no longer following
  });

  it("starts from the call the client is already in", () => {
    const box = new MemoryOutbox({ fetch: service().fetch, storage: null, sendBeacon: null });
    const calls = new FakeCalls(box);
    box.open(grant("vs_1"));
    calls.go("connected", callInfo("vs_1"));
    expect(followCallMemory(calls)?.current()).toMatchObject({ sessionId: "vs_1", status: "idle" });
  });
});
