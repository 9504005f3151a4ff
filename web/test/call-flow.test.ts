import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { FakePeerConnection } from "./fake-rtc";
import { BASE_URL, harness } from "./harness";
import { EXPIRES_AT, type Route, created, service } from "./fake-service";
import { type Seen, networkDown, problem } from "./helpers";
import { MemoryOutbox } from "../src/lib/outbox";
import { MemoryStorage } from "../src/lib/storage";
import type { VoiceClient } from "../src/lib/client";
import type { TranscriptTurn } from "../src/lib/types";

const deletes = (seen: Seen[]): Seen[] => seen.filter((s) => s.method === "DELETE");

describe("VoiceClient, default flow through POST /realtime/calls", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date((EXPIRES_AT - 1800) * 1000));
    FakePeerConnection.last = null;
    FakePeerConnection.log = [];
    FakePeerConnection.gatherIce = true;
  });
  afterEach(() => {
    vi.useRealTimers();
    vi.unstubAllGlobals();
    FakePeerConnection.gatherIce = true;
  });

  it("creates the track and both event channels before the offer, posts it with the agent, applies the answer and keeps the call", async () => {
    const { client, seen, states } = harness(service());
    await client.connect({ agent: "elena" });

    expect(states).toEqual(["microphone", "connecting", "connecting", "connected"]);
    expect(FakePeerConnection.log).toEqual(["createOffer with oai-events+voice-live-events", "POST call", "setRemoteDescription"]);
    const pc = FakePeerConnection.last;
    expect(pc?.tracks).toHaveLength(1);
    const [post] = seen;
    expect(post?.url).toBe(`${BASE_URL}/realtime/calls`);
    expect(post?.method).toBe("POST");
    expect(post?.headers["content-type"]).toBe("application/json");
    expect(JSON.parse(post?.body ?? "")).toEqual({ agent: "elena", sdp_offer: "v=0 fake-offer" });
    expect(pc?.remoteDescription).toEqual({ type: "answer", sdp: "v=0 fake-answer" });
    expect(client.call).toEqual({
      callId: "rc_1a2b",
      sessionId: "vs_abc",
      conversationId: "cv_x.y",
      agent: { id: "elena", name: "Elena", voice: "en-US-Ava:DragonHDLatestNeural" },
      upstream: "voice-live",
      expiresAt: EXPIRES_AT,
      memory: true,
    });
  });

  it.each([
    ["voice-live", "voice-live-events", "oai-events"],
    ["azure-openai", "oai-events", "voice-live-events"],
  ])("keeps the %s upstream's channel (%s) and closes the other before the answer is applied", async (upstream, kept, dropped) => {
    const { client } = harness(service({ create: () => created({ upstream }) }));
    await client.connect({ agent: "elena" });
    const pc = FakePeerConnection.last;
    expect(pc?.channelNamed(kept)?.closed).toBe(false);
    expect(pc?.channelNamed(dropped)?.closed).toBe(true);
    expect(pc?.channel?.label).toBe(kept);
  });

  it("keeps listening on both channels when the answer names an upstream this client does not know", async () => {
    const { client } = harness(service({ create: () => created({ upstream: "some-future-upstream" }) }));
    await client.connect({ agent: "elena" });
    expect(FakePeerConnection.last?.channels.map((c) => c.closed)).toEqual([false, false]);
    FakePeerConnection.last?.channelNamed("oai-events")?.receive({
      type: "conversation.item.input_audio_transcription.completed",
      item_id: "item_u1",
      transcript: "Hello",
    });
    expect(client.transcript().map((t) => t.text)).toEqual(["Hello"]);
  });

  it.each([
    ["voice-live", "voice-live-events", "response.audio_transcript.done", "conversation.item.created"],
    ["azure-openai", "oai-events", "response.output_audio_transcript.done", "conversation.item.added"],
  ])(
    "assembles %s transcripts from its channel (%s) and posts the turns with the memory token",
    async (upstream, label, assistantDone, itemAdded) => {
      const { client, seen } = harness(service({ create: () => created({ upstream }) }));
      await client.connect({ agent: "elena" });
      const channel = FakePeerConnection.last?.channelNamed(label);
      channel?.receive({ type: itemAdded, previous_item_id: null, item: { id: "item_u1", type: "message", role: "user" } });
      channel?.receive({ type: itemAdded, previous_item_id: "item_u1", item: { id: "item_a1", type: "message", role: "assistant" } });
      channel?.receive({ type: assistantDone, item_id: "item_a1", transcript: "Hi, I'm Elena." });
      channel?.receive({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Hello?" });

      expect(client.transcript().map((t) => [t.id, t.role, t.text])).toEqual([
        ["item_u1", "user", "Hello?"],
        ["item_a1", "assistant", "Hi, I'm Elena."],
      ]);
      await vi.advanceTimersByTimeAsync(300);
      const enrich = seen.filter((s) => s.url.endsWith("/memory/enrich"));
      expect(enrich).toHaveLength(1);
      expect(enrich[0]?.headers["authorization"]).toBe("Bearer mem-token");
      expect(JSON.parse(enrich[0]?.body ?? "")).toMatchObject({ session_id: "vs_abc", messages: [{ id: "item_u1" }, { id: "item_a1" }] });
    },
  );

  it("sends the host's bearer token and the conversation to continue, and the same token to hang up", async () => {
    let n = 0;
    const { client, seen } = harness(service(), { getAuthToken: async () => `user-jwt-${++n}` });
    await client.connect({ agent: "sage", conversationId: "cv_old.mac" });
    expect(seen[0]?.headers["authorization"]).toBe("Bearer user-jwt-1");
    expect(JSON.parse(seen[0]?.body ?? "")).toEqual({ agent: "sage", sdp_offer: "v=0 fake-offer", conversation_id: "cv_old.mac" });
    await client.hangUp();
    expect(deletes(seen)[0]?.headers["authorization"]).toBe("Bearer user-jwt-2");
  });

  it("hangs up through the service first: microphone and voice stop at once, DELETE, then the peer closes", async () => {
    let answer: (response: Response) => void = () => undefined;
    const later = new Promise<Response>((resolve) => {
      answer = resolve;
    });
    const { client, seen, microphone, changes } = harness(service({ end: () => later }));
    await client.connect({ agent: "elena" });
    const pc = FakePeerConnection.last;
    FakePeerConnection.log = [];

    const done = client.hangUp();
    expect(microphone.tracks[0]?.stopped).toBe(true);
    expect(changes.at(-1)).toMatchObject({ state: "ended", reason: "hangup" });
    await vi.advanceTimersByTimeAsync(100);
    expect(FakePeerConnection.log).toEqual(["DELETE call"]);
    expect(pc?.closed).toBe(false);

    answer(new Response(null, { status: 204 }));
    await done;
    expect(FakePeerConnection.log).toEqual(["DELETE call", "pc.close"]);
    expect(pc?.closed).toBe(true);
    expect(pc?.channel?.closed).toBe(true);
    expect(deletes(seen).map((s) => s.url)).toEqual([`${BASE_URL}/realtime/calls/rc_1a2b`]);
  });

  it.each<[string, Route]>([
    ["never answers", () => "hang"],
    ["answers 404 (already ended)", () => problem(404, "call_not_found")],
    ["answers 503", () => problem(503, "upstream_unavailable")],
    ["is unreachable", () => networkDown()],
  ])("still closes the peer, within the bound, when the DELETE %s", async (_, end) => {
    const { client, seen, errors } = harness(service({ end }), { hangupTimeoutMs: 2000 });
    await client.connect({ agent: "elena" });
    const done = client.hangUp();
    await vi.advanceTimersByTimeAsync(2000);
    await expect(done).resolves.toBeUndefined();
    expect(FakePeerConnection.last?.closed).toBe(true);
    expect(deletes(seen)).toHaveLength(1);
    expect(errors).toEqual([]);
    expect(client.state).toBe("ended");
  });

  it("posts a new call's offer only after the previous call's DELETE was answered (the user's call limit)", async () => {
    let answer: (response: Response) => void = () => undefined;
    const later = new Promise<Response>((resolve) => {
      answer = resolve;
    });
    const { client } = harness(service({ end: () => later }));
    await client.connect({ agent: "elena" });
    FakePeerConnection.log = [];
    const next = client.connect({ agent: "marcus" });
    await vi.advanceTimersByTimeAsync(100);
    expect(FakePeerConnection.log).toEqual(["DELETE call", "createOffer with oai-events+voice-live-events"]);
    answer(new Response(null, { status: 204 }));
    await next;
    expect(FakePeerConnection.log).toEqual([
      "DELETE call",
      "createOffer with oai-events+voice-live-events",
      "pc.close",
      "POST call",
      "setRemoteDescription",
    ]);
    expect(client.state).toBe("connected");
  });

  it("hangs up once: a second hangUp sends no second DELETE", async () => {
    const { client, seen } = harness(service());
    await client.connect({ agent: "elena" });
    await client.hangUp();
    await client.hangUp();
    expect(deletes(seen)).toHaveLength(1);
  });

  it("on page unload sends a keepalive DELETE synchronously with the setup's token, and not on a hidden tab", async () => {
    const page = new EventTarget();
    const doc = Object.assign(new EventTarget(), { visibilityState: "visible" });
    vi.stubGlobal("addEventListener", page.addEventListener.bind(page));
    vi.stubGlobal("removeEventListener", page.removeEventListener.bind(page));
    vi.stubGlobal("document", doc);
    const { client, seen, changes } = harness(service(), { pageLifecycle: true, getAuthToken: async () => "user-jwt" });
    await client.connect({ agent: "elena" });

    doc.visibilityState = "hidden";
    doc.dispatchEvent(new Event("visibilitychange"));
    expect(deletes(seen)).toEqual([]);
    expect(client.state).toBe("connected");

    page.dispatchEvent(new Event("pagehide"));
    // No await: the request has to start inside the pagehide handler.
    const [end] = deletes(seen);
    expect(end).toMatchObject({ url: `${BASE_URL}/realtime/calls/rc_1a2b`, keepalive: true });
    expect(end?.headers["authorization"]).toBe("Bearer user-jwt");
    expect(changes.at(-1)).toMatchObject({ state: "ended", reason: "page_unload" });
    expect(FakePeerConnection.last?.closed).toBe(true);
    await vi.advanceTimersByTimeAsync(0);
    expect(deletes(seen)).toHaveLength(1);
    client.dispose();
  });

  it.each([
    ["passed in by the host (it keeps delivering for the next client)", true],
    ["created by the client (its timers stop)", false],
  ])("dispose() stops the memory outbox only when the client created it: outbox %s", async (_, passedIn) => {
    const fetchPair = service();
    const outbox = new MemoryOutbox({ fetch: fetchPair.fetch, baseUrl: BASE_URL, storage: new MemoryStorage(), sendBeacon: null });
    const first = harness(fetchPair, { memory: passedIn ? outbox : { storage: new MemoryStorage(), sendBeacon: null } });
    const memoryEvents: unknown[] = [];
    first.client.on("memory", (state) => memoryEvents.push(state));
    first.client.dispose();
    const reused = first.client.memory;
    expect(reused).not.toBeNull();
    if (reused === null) return;
    const second = harness(fetchPair, { memory: reused });
    await second.client.connect({ agent: "elena" });
    FakePeerConnection.last?.channel?.receive({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Hi" });
    await vi.advanceTimersByTimeAsync(300);

    const enrich = fetchPair.seen.filter((s) => s.url.endsWith("/memory/enrich"));
    expect(enrich).toHaveLength(passedIn ? 1 : 0);
    expect(memoryEvents).toEqual([]); // a disposed client no longer follows the outbox
    second.client.dispose();
  });

  it.each<[string, Route, Record<string, unknown>]>([
    ["429 too_many_calls", () => problem(429, "too_many_calls", { "Retry-After": "30" }), { kind: "too_many_calls", retryAfterSeconds: 30, status: 429 }],
    ["429 rate_limited", () => problem(429, "rate_limited", { "Retry-After": "12" }), { kind: "rate_limited", retryAfterSeconds: 12 }],
    ["502 upstream_rejected", () => problem(502, "upstream_rejected"), { kind: "service_unavailable", status: 502, code: "upstream_rejected" }],
    ["502 upstream_error", () => problem(502, "upstream_error"), { kind: "service_unavailable", code: "upstream_error" }],
    ["503 upstream_unavailable", () => problem(503, "upstream_unavailable"), { kind: "service_unavailable", status: 503 }],
    ["503 credential_unavailable", () => problem(503, "credential_unavailable"), { kind: "service_unavailable" }],
    ["504 upstream_timeout", () => problem(504, "upstream_timeout"), { kind: "service_unavailable", status: 504 }],
    ["500 without a body", () => new Response("oops", { status: 500 }), { kind: "service_unavailable", status: 500 }],
    ["400 validation_failed", () => problem(400, "validation_failed"), { kind: "mint_refused", status: 400 }],
    ["404 unknown agent", () => problem(404, "unknown_agent"), { kind: "mint_refused", status: 404 }],
    ["413 offer too large", () => problem(413, "payload_too_large"), { kind: "mint_refused", status: 413 }],
    ["401", () => problem(401, "unauthenticated"), { kind: "unauthenticated" }],
    ["403", () => problem(403, "forbidden"), { kind: "forbidden" }],
    ["network down", () => networkDown(), { kind: "service_unreachable", code: "network" }],
    ["201 without an SDP answer", () => created({ sdp_answer: "" }), { kind: "service_unavailable", code: "bad_answer" }],
    ["201 that is not JSON", () => new Response("<html>", { status: 201 }), { kind: "service_unavailable", code: "bad_answer" }],
  ])("maps %s to a plain-words error, closes the peer and sends no DELETE", async (_, create, expected) => {
    const { client, seen, states, errors } = harness(service({ create }));
    await expect(client.connect({ agent: "elena" })).rejects.toMatchObject(expected);
    expect(errors[0]).toMatchObject(expected);
    expect(states.at(-1)).toBe("failed");
    expect(FakePeerConnection.last?.closed).toBe(true);
    expect(FakePeerConnection.last?.remoteDescription).toBeNull();
    expect(deletes(seen)).toEqual([]);
  });

  it("explains too_many_calls in words a user can act on", async () => {
    const { client, errors } = harness(service({ create: () => problem(429, "too_many_calls", { "Retry-After": "30" }) }));
    await client.connect({ agent: "elena" }).catch(() => undefined);
    expect(errors[0]?.message).toMatch(/already have as many calls open as allowed.*Hang one up/);
  });

  it("gives up on a service that does not answer within callTimeoutMs", async () => {
    const { client } = harness(service({ create: () => "hang" }), { callTimeoutMs: 4000 });
    const attempt = expect(client.connect({ agent: "elena" })).rejects.toMatchObject({ kind: "service_unreachable", code: "timeout" });
    await vi.advanceTimersByTimeAsync(4000);
    await attempt;
  });

  it("waits for ICE gathering to complete, but only up to its bound, before posting the offer", async () => {
    FakePeerConnection.gatherIce = false;
    const { client, seen } = harness(service(), { iceGatheringTimeoutMs: 1500 });
    const attempt = client.connect({ agent: "elena" });
    await vi.advanceTimersByTimeAsync(1499);
    expect(seen).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    await attempt;
    expect(seen.map((s) => s.method)).toEqual(["POST"]);
  });

  it("ends at the service a call that was hung up while the service was setting it up", async () => {
    let answer: (response: Response) => void = () => undefined;
    const later = new Promise<Response>((resolve) => {
      answer = resolve;
    });
    const { client, seen, states } = harness(service({ create: () => later }));
    const attempt = client.connect({ agent: "elena" });
    await vi.advanceTimersByTimeAsync(10);
    void client.hangUp();
    answer(created());
    await expect(attempt).resolves.toBeUndefined();
    await vi.advanceTimersByTimeAsync(0);
    expect(deletes(seen).map((s) => s.url)).toEqual([`${BASE_URL}/realtime/calls/rc_1a2b`]);
    expect(FakePeerConnection.last?.remoteDescription).toBeNull();
    expect(states.at(-1)).toBe("ended");
  });

  it("ends the call at the service when the media connection never comes up", async () => {
    const { client, seen } = harness(service(), { connectTimeoutMs: 5000 });
    const originalConnect = FakePeerConnection.prototype.connect;
    FakePeerConnection.prototype.connect = function noop() {};
    try {
      const attempt = expect(client.connect({ agent: "elena" })).rejects.toMatchObject({ kind: "azure_unreachable", code: "ice_timeout" });
      await vi.advanceTimersByTimeAsync(5000);
      await attempt;
    } finally {
      FakePeerConnection.prototype.connect = originalConnect;
    }
    expect(deletes(seen)).toHaveLength(1);
  });

  it.each<[string, number, string, RegExp]>([
    ["before expires_at", EXPIRES_AT - 600, "remote_closed", /ended by the voice service or Azure/],
    ["at expires_at", EXPIRES_AT, "max_duration", /maximum length/],
    ["just before expires_at (clock skew)", EXPIRES_AT - 2, "max_duration", /maximum length/],
  ])("surfaces the events channel closing %s as ended (%s)", async (_, closeAt, reason, note) => {
    const { client, seen, changes, warnings, errors, microphone } = harness(service());
    await client.connect({ agent: "elena" });
    vi.setSystemTime(new Date(closeAt * 1000));
    FakePeerConnection.last?.channel?.remoteClose();
    expect(changes.at(-1)).toMatchObject({ state: "ended", reason });
    expect(warnings.at(-1)).toMatch(note);
    expect(errors).toEqual([]);
    expect(microphone.tracks[0]?.stopped).toBe(true);
    await vi.advanceTimersByTimeAsync(0);
    // The service is told too (it answers 404 when it ended the call itself): no call is left behind.
    expect(deletes(seen)).toHaveLength(1);
    expect(FakePeerConnection.last?.closed).toBe(true);
  });

  it.each<[string, (client: VoiceClient) => Promise<void>]>([
    ["the user hangs up", (client) => client.hangUp()],
    ["the call's channel closes", async () => FakePeerConnection.last?.channel?.remoteClose()],
    ["another call starts", async (client) => void client.connect({ agent: "marcus" })],
  ])("shows an answer cut off when %s as interrupted and sends only the completed turns to memory", async (_, end) => {
    const { client, seen } = harness(service());
    const shown: TranscriptTurn[][] = [];
    client.on("transcript", (turns) => shown.push(turns));
    await client.connect({ agent: "elena" });
    const channel = FakePeerConnection.last?.channel;
    channel?.receive({ type: "conversation.item.created", previous_item_id: null, item: { id: "item_u1", type: "message", role: "user" } });
    channel?.receive({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Tell me a story" });
    channel?.receive({ type: "response.audio_transcript.delta", item_id: "item_a1", delta: "Once upon" });
    await end(client);
    await vi.advanceTimersByTimeAsync(300);

    const cut = shown.filter((turns) => turns.some((t) => t.interrupted)).at(-1);
    expect(cut).toEqual([
      { id: "item_u1", role: "user", text: "Tell me a story", final: true, at: expect.any(String) },
      { id: "item_a1", role: "assistant", text: "Once upon", final: false, interrupted: true },
    ]);
    const posted = seen.filter((s) => s.url.endsWith("/memory/enrich")).flatMap((s) => JSON.parse(s.body ?? "{}").messages);
    expect(posted.map((m: { id: string }) => m.id)).toEqual(["item_u1"]);
  });

  it("ignores the dropped channel closing: only the kept channel's end ends the call", async () => {
    const { client } = harness(service());
    await client.connect({ agent: "elena" });
    FakePeerConnection.last?.channelNamed("oai-events")?.remoteClose();
    expect(client.state).toBe("connected");
  });

  it("handles no Azure credential: every request goes to the service, with the caller's or the memory token only", async () => {
    const { client, seen } = harness(service(), { getAuthToken: () => "user-jwt" });
    await client.connect({ agent: "elena" });
    FakePeerConnection.last?.channel?.receive({
      type: "conversation.item.input_audio_transcription.completed",
      item_id: "item_u1",
      transcript: "Hello",
    });
    await vi.advanceTimersByTimeAsync(300);
    await client.hangUp();

    expect(seen.map((s) => `${s.method} ${s.url}`)).toEqual([
      `POST ${BASE_URL}/realtime/calls`,
      `POST ${BASE_URL}/memory/enrich`,
      `DELETE ${BASE_URL}/realtime/calls/rc_1a2b`,
    ]);
    for (const request of seen) {
      expect(["Bearer user-jwt", "Bearer mem-token"]).toContain(request.headers["authorization"]);
      expect(Object.keys(request.headers)).not.toContain("api-key");
      expect(`${JSON.stringify(request.headers)} ${request.body}`).not.toMatch(/ek_|client_secret|api-key/i);
    }
  });
});
