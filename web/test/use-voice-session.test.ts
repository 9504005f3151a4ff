// @vitest-environment jsdom
import { act, cleanup, renderHook, waitFor } from "@testing-library/react";
import { StrictMode } from "react";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { VoiceClient } from "../src/lib/client";
import type { CallMemoryProgress, MemoryProgressWire } from "../src/lib/memory-progress";
import type { MemoryOutbox } from "../src/lib/outbox";
import { type UseVoiceSessionOptions, type VoiceSession, useVoiceSession } from "../src/lib/react";
import { FakePeerConnection } from "./fake-rtc";
import { CALL, type Route, created, progressAnswer, progressRequests, progressSession, service } from "./fake-service";
import { BASE_URL, type FakeBrowser, fakeBrowser } from "./harness";
import { type Seen, networkDown, problem, trackedClock } from "./helpers";

const posts = (seen: Seen[]): Seen[] => seen.filter((s) => s.method === "POST" && s.url.endsWith("/realtime/calls"));
const deletes = (seen: Seen[]): Seen[] => seen.filter((s) => s.method === "DELETE");
/** Poll the call's memory progress every few milliseconds, so tests wait little (never on wall-clock assertions). */
const FAST: UseVoiceSessionOptions["memoryProgress"] = { minDelayMs: 5, maxDelayMs: 20 };

/** The user said `text` (a final transcript): the client commits the turn to memory. */
function say(itemId: string, text: string): void {
  act(() => {
    FakePeerConnection.last?.channelNamed("voice-live-events")?.receive({
      type: "conversation.item.input_audio_transcription.completed",
      item_id: itemId,
      transcript: text,
    });
  });
}

/** A progress route answering, for the session asked about, whatever `server.now` says at the time. */
function scriptedProgress(now: Partial<MemoryProgressWire>): { server: { now: Partial<MemoryProgressWire> }; progress: Route } {
  const server = { now };
  return { server, progress: (seen) => progressAnswer(progressSession(seen.url) ?? "", server.now) };
}

/** Render the hook on the fake browser and a scripted service; `overrides` reach the hook's options. */
function setUp(routes: Parameters<typeof service>[0] = {}, overrides: Partial<UseVoiceSessionOptions> = {}) {
  const fetchPair = service(routes);
  const clock = trackedClock();
  const browser: FakeBrowser = fakeBrowser(fetchPair, clock);
  const rendered = renderHook(
    (props: Partial<UseVoiceSessionOptions>) => useVoiceSession({ agent: "elena", ...browser.options, memoryProgress: FAST, ...overrides, ...props }),
    { initialProps: {} },
  );
  return { ...rendered, ...browser, outbox: browser.options.memory as MemoryOutbox, seen: fetchPair.seen, clock };
}

/** `connect()` inside act, as a click handler would call it. */
async function connect(session: () => VoiceSession, options?: Parameters<VoiceSession["connect"]>[0]): Promise<void> {
  await act(async () => {
    await session().connect(options);
  });
}

describe("useVoiceSession (React entry)", () => {
  beforeEach(() => {
    FakePeerConnection.last = null;
    FakePeerConnection.log = [];
    FakePeerConnection.gatherIce = true;
  });
  afterEach(() => {
    cleanup();
    vi.restoreAllMocks();
  });

  it("starts idle with a client, no call, no transcript and memory idle", () => {
    const { result } = setUp();
    expect(result.current.client).toBeInstanceOf(VoiceClient);
    expect(result.current).toMatchObject({ agent: "elena", state: "idle", active: false, call: null, transcript: [], muted: false, error: null });
    expect(result.current.memory).toMatchObject({ sessionId: null, status: "idle", saved: 0, queued: 0 });
    expect(result.current.outbox).toMatchObject({ status: "idle", pending: 0 });
  });

  it("shows memory off when the client has no memory outbox", () => {
    const { result, seen } = setUp({}, { memory: false });
    expect(result.current.memory.status).toBe("off");
    expect(result.current.outbox).toBeNull();
    expect(progressRequests(seen)).toHaveLength(0);
  });

  it("shows the call's memory queued after the 202 and saved only once the service reports the turn delivered", async () => {
    const { server, progress } = scriptedProgress({ queued: 1 }); // Zep is down: stored on the service, not delivered
    const { result, seen } = setUp({ progress });
    await connect(() => result.current);
    expect(result.current.memory).toMatchObject({ sessionId: CALL.session_id, status: "idle", saved: 0 });
    say("item_u1", "Hello");
    await waitFor(() => expect(progressRequests(seen).length).toBeGreaterThanOrEqual(2));
    expect(result.current.outbox?.status).toBe("saved"); // the browser outbox's 202 …
    expect(result.current.memory).toMatchObject({ status: "queued", queued: 1, saved: 0, settled: false }); // … is not memory
    expect(progressRequests(seen)[0]).toMatchObject({ url: `${BASE_URL}/memory/sessions/${CALL.session_id}/progress`, method: "GET" });
    expect(progressRequests(seen)[0]?.headers["authorization"]).toBe(`Bearer ${CALL.memory?.token}`);

    server.now = { delivered: 1 };
    await waitFor(() => expect(result.current.memory).toMatchObject({ status: "saved", saved: 1, queued: 0, settled: true }));
  });

  it.each<[string, Partial<MemoryProgressWire>, Partial<CallMemoryProgress>]>([
    ["queued, with the service's next attempt, while the service retries the delivery", { queued: 2, retrying: true, next_attempt_at: 1_900_000_000 }, { status: "queued", queued: 2, retryAt: 1_900_000_000_000 }],
    ["queued while one turn is queued and the other was refused", { queued: 1, dead_lettered: 1 }, { status: "queued", queued: 1, failed: 1 }],
    ["failed when the service dead-lettered the turns", { dead_lettered: 2 }, { status: "failed", failed: 2, saved: 0, settled: true }],
    ["failed when one turn was refused and the other saved", { delivered: 1, dead_lettered: 1 }, { status: "failed", failed: 1, saved: 1, settled: true }],
    ["saved when every turn was delivered", { delivered: 2 }, { status: "saved", saved: 2, failed: 0, settled: true }],
  ])("reads the call's memory as %s", async (_, answer, expected) => {
    const { server, progress } = scriptedProgress({ queued: 2 });
    const { result } = setUp({ progress });
    await connect(() => result.current);
    say("item_u1", "One");
    say("item_u2", "Two");
    await waitFor(() => expect(result.current.memory).toMatchObject({ status: "queued", unsent: 0, queued: 2 }));
    server.now = answer;
    await waitFor(() => expect(result.current.memory).toMatchObject({ sessionId: CALL.session_id, retryAt: null, ...expected }));
  });

  it("shows retrying while the call's turns are only in this browser because posting them failed", async () => {
    const { result, seen } = setUp({ enrich: () => problem(503, "storage_unavailable") });
    await connect(() => result.current);
    say("item_u1", "Hello");
    await waitFor(() => expect(result.current.memory).toMatchObject({ status: "retrying", unsent: 1, saved: 0 }));
    expect(result.current.memory.retryAt).not.toBeNull();
    expect(progressRequests(seen)).toHaveLength(0); // nothing reached the service to ask about
  });

  it("starts each call's memory afresh: a new call opens idle on its own session, not with the last call's count", async () => {
    let calls = 0;
    const next = { call_id: "rc_2", session_id: "vs_next" };
    const { result, seen } = setUp({ create: () => ((calls += 1), calls === 1 ? created() : created(next)) });
    await connect(() => result.current);
    say("item_u1", "One");
    say("item_u2", "Two");
    await waitFor(() => expect(result.current.memory).toMatchObject({ sessionId: CALL.session_id, status: "saved", saved: 2 }));
    await act(async () => {
      await result.current.hangUp();
    });
    expect(result.current.memory).toMatchObject({ status: "saved", saved: 2 }); // still the ended call's

    await connect(() => result.current);
    expect(result.current.memory).toMatchObject({ sessionId: "vs_next", status: "idle", saved: 0, queued: 0 });
    say("item_u3", "Three");
    await waitFor(() => expect(result.current.memory).toMatchObject({ sessionId: "vs_next", status: "saved", saved: 1 }));
    expect(progressRequests(seen).at(-1)?.url).toBe(`${BASE_URL}/memory/sessions/vs_next/progress`);
  });

  it("asks for no progress after unmount: an answer in flight is dropped, the outbox's next ack schedules nothing, no timer is left", async () => {
    const held: ((response: Response) => void)[] = [];
    let hold = false;
    const progress: Route = (seen) =>
      hold ? new Promise<Response>((resolve) => held.push(resolve)) : progressAnswer(progressSession(seen.url) ?? "", { queued: 1 });
    const { result, unmount, seen, clock, outbox } = setUp({ progress });
    await connect(() => result.current);
    say("item_u1", "Hello");
    await waitFor(() => expect(result.current.memory).toMatchObject({ status: "queued", queued: 1 }));
    hold = true;
    await waitFor(() => expect(held).toHaveLength(1)); // a progress request is in flight
    unmount();
    const asked = progressRequests(seen).length;

    held[0]?.(progressAnswer(CALL.session_id, { queued: 1 }));
    outbox.add(CALL.session_id, { id: "item_u9", role: "user", text: "after unmount" });
    await waitFor(() => expect(seen.some((s) => s.url.endsWith("/memory/enrich") && s.body.includes("item_u9"))).toBe(true));
    await waitFor(() => expect(outbox.state()).toMatchObject({ status: "saved", pending: 0 }));
    expect(clock.pending()).toBe(0);
    expect(progressRequests(seen)).toHaveLength(asked);
  });

  it("goes connecting (no call details yet) while the service sets the call up, then connected with the call's details", async () => {
    let answer: (response: Response) => void = () => undefined;
    const pending = new Promise<Response>((resolve) => {
      answer = resolve;
    });
    const { result } = setUp({ create: () => pending });
    let connecting: Promise<void> = Promise.resolve();
    act(() => {
      connecting = result.current.connect();
    });
    await waitFor(() => expect(FakePeerConnection.log).toContain("POST call"));
    expect(result.current).toMatchObject({ state: "connecting", active: true, call: null });

    await act(async () => {
      answer(created());
      await connecting;
    });
    expect(result.current).toMatchObject({ state: "connected", active: true, error: null });
    expect(result.current.call).toMatchObject({ callId: CALL.call_id, sessionId: CALL.session_id, agent: CALL.agent, upstream: "voice-live", memory: true });
  });

  it("mirrors the transcript as turns arrive, in conversation order, partial text included", async () => {
    const { result } = setUp();
    await connect(() => result.current);
    const channel = FakePeerConnection.last?.channelNamed("voice-live-events");
    act(() => {
      channel?.receive({ type: "conversation.item.created", previous_item_id: null, item: { id: "item_u1", type: "message", role: "user" } });
      channel?.receive({ type: "conversation.item.created", previous_item_id: "item_u1", item: { id: "item_a1", type: "message", role: "assistant" } });
      channel?.receive({ type: "response.audio_transcript.delta", item_id: "item_a1", delta: "Hi, I" });
    });
    expect(result.current.transcript.map((t) => [t.id, t.text, t.final])).toEqual([
      ["item_u1", "", false],
      ["item_a1", "Hi, I", false],
    ]);

    act(() => {
      channel?.receive({ type: "response.audio_transcript.done", item_id: "item_a1", transcript: "Hi, I'm Elena." });
      channel?.receive({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Hello?" });
    });
    expect(result.current.transcript.map((t) => [t.role, t.text, t.final])).toEqual([
      ["user", "Hello?", true],
      ["assistant", "Hi, I'm Elena.", true],
    ]);
  });

  it("mirrors who is speaking from the VAD events", async () => {
    const { result } = setUp();
    await connect(() => result.current);
    act(() => FakePeerConnection.last?.channel?.receive({ type: "input_audio_buffer.speech_started" }));
    expect(result.current.speaking).toEqual({ user: true, assistant: false });
  });

  it("hangs up at the service, stops the microphone, closes the peer and reports ended (hangup)", async () => {
    const { result, seen, microphone } = setUp();
    await connect(() => result.current);
    await act(async () => {
      await result.current.hangUp();
    });
    expect(result.current).toMatchObject({ state: "ended", active: false, endReason: "hangup" });
    expect(deletes(seen).map((s) => s.url)).toEqual([`http://127.0.0.1:8000/realtime/calls/${CALL.call_id}`]);
    expect(microphone.tracks.every((t) => t.stopped)).toBe(true);
    expect(FakePeerConnection.last?.closed).toBe(true);
  });

  it("mutes and unmutes the microphone track without ending the call", async () => {
    const { result, microphone } = setUp();
    await connect(() => result.current);
    act(() => result.current.toggleMuted());
    expect(result.current.muted).toBe(true);
    expect(microphone.tracks[0]?.enabled).toBe(false);
    act(() => result.current.setMuted(false));
    expect(result.current.muted).toBe(false);
    expect(microphone.tracks[0]?.enabled).toBe(true);
    expect(result.current.state).toBe("connected");
  });

  it.each<[string, Route | null, string]>([
    ["the microphone is refused", null, "microphone_denied"],
    ["the service is unreachable", () => networkDown(), "service_unreachable"],
    ["the service refuses the agent", () => problem(404, "unknown_agent"), "mint_refused"],
    ["Azure fails behind the service", () => problem(502, "upstream_error"), "service_unavailable"],
    ["the user has too many calls", () => problem(429, "too_many_calls", { "Retry-After": "7" }), "too_many_calls"],
  ])("surfaces a failure as state failed and error (when %s), and connect() does not reject", async (_, create, kind) => {
    const { result, getUserMedia } = setUp(create ? { create } : {});
    if (!create) getUserMedia.mockRejectedValueOnce(new DOMException("denied", "NotAllowedError"));
    await connect(() => result.current);
    expect(result.current).toMatchObject({ state: "failed", active: false, error: { kind } });
    expect(result.current.error?.message).toMatch(/\w/);
  });

  it("clears the last error and end reason when a new call starts", async () => {
    const { result } = setUp({ create: (() => {
      let first = true;
      return () => (first ? ((first = false), problem(502, "upstream_error")) : created());
    })() });
    await connect(() => result.current);
    expect(result.current.error?.kind).toBe("service_unavailable");
    await connect(() => result.current);
    expect(result.current).toMatchObject({ state: "connected", error: null, endReason: null });
  });

  it("calls the agent and conversation of the latest render, or the ones connect() is given", async () => {
    const { result, rerender, seen } = setUp();
    rerender({ agent: "sage", conversationId: "cv_old.mac" });
    await connect(() => result.current);
    expect(JSON.parse(posts(seen)[0]?.body ?? "")).toMatchObject({ agent: "sage", conversation_id: "cv_old.mac" });
    expect(result.current.agent).toBe("sage");
    await connect(() => result.current, { agent: "marcus" });
    expect(JSON.parse(posts(seen)[1]?.body ?? "")).toMatchObject({ agent: "marcus", conversation_id: "cv_old.mac" });
  });

  it("asks the latest getAuthToken for the bearer token, without recreating the client", async () => {
    const { result, rerender, seen } = setUp({}, { getAuthToken: () => "token-1" });
    const client = result.current.client;
    rerender({ getAuthToken: () => "token-2" });
    await connect(() => result.current);
    expect(result.current.client).toBe(client);
    expect(posts(seen)[0]?.headers["authorization"]).toBe("Bearer token-2");
  });

  it("on unmount hangs the call up at the service, closes the peer, and leaves no timer pending", async () => {
    const { result, unmount, seen, microphone, clock } = setUp();
    await connect(() => result.current);
    act(() => {
      FakePeerConnection.last?.channelNamed("voice-live-events")?.receive({
        type: "conversation.item.input_audio_transcription.completed",
        item_id: "item_u1",
        transcript: "Bye",
      });
    });
    const pc = FakePeerConnection.last;
    unmount();
    expect(microphone.tracks.every((t) => t.stopped)).toBe(true);
    await waitFor(() => expect(pc?.closed).toBe(true));
    expect(deletes(seen)).toHaveLength(1);
    expect(clock.pending()).toBe(0);
  });

  it("under StrictMode keeps exactly one client listening to the page while mounted, and none after unmount", async () => {
    const listening = new Map<string, number>();
    const add = window.addEventListener.bind(window);
    const remove = window.removeEventListener.bind(window);
    vi.spyOn(window, "addEventListener").mockImplementation((type: string, listener, options) => {
      listening.set(type, (listening.get(type) ?? 0) + 1);
      add(type, listener, options);
    });
    vi.spyOn(window, "removeEventListener").mockImplementation((type: string, listener, options) => {
      listening.set(type, (listening.get(type) ?? 0) - 1);
      remove(type, listener, options);
    });
    const browser = fakeBrowser(service());
    const { result, unmount } = renderHook(() => useVoiceSession({ agent: "elena", ...browser.options, pageLifecycle: true }), {
      wrapper: StrictMode,
    });
    expect(listening.get("pagehide")).toBe(1);
    await connect(() => result.current);
    expect(result.current.state).toBe("connected");
    unmount();
    expect(listening.get("pagehide")).toBe(0);
    expect(listening.get("online")).toBe(0);
  });

  it("under StrictMode delivers a call's turns through an outbox the host passed in, and mirrors its state", async () => {
    const fetchPair = service();
    const clock = trackedClock();
    const browser = fakeBrowser(fetchPair, clock);
    const { result, unmount } = renderHook(() => useVoiceSession({ agent: "elena", ...browser.options, memoryProgress: FAST }), { wrapper: StrictMode });
    await connect(() => result.current);
    act(() => {
      FakePeerConnection.last?.channel?.receive({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Hi" });
    });
    await waitFor(() => expect(result.current.memory).toMatchObject({ sessionId: CALL.session_id, status: "saved", saved: 1 }));
    expect(result.current.outbox).toMatchObject({ status: "saved", saved: 1, pending: 0 });
    const enrich = fetchPair.seen.filter((s) => s.url.endsWith("/memory/enrich"));
    expect(enrich.map((s) => JSON.parse(s.body).messages.map((m: { id: string }) => m.id))).toEqual([["item_u1"]]);
    unmount();
    expect(clock.pending()).toBe(0); // neither the first (StrictMode) mount's progress nor the second's polls on
  });

  it("uses a client it is given, and leaves it (and its call) alone on unmount", async () => {
    const browser = fakeBrowser(service());
    const client = new VoiceClient(browser.options);
    await client.connect({ agent: "elena" });
    const { result, unmount } = renderHook(() => useVoiceSession({ agent: "elena", client }));
    expect(result.current).toMatchObject({ client, state: "connected", call: { callId: CALL.call_id } });
    expect(result.current.memory).toMatchObject({ sessionId: CALL.session_id, status: "idle" }); // the running call's memory
    unmount();
    expect(client.state).toBe("connected");
    expect(FakePeerConnection.last?.closed).toBe(false);
    await client.hangUp();
  });
});
