import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import type { VoiceClientOptions } from "../src/lib/client";
import { VoiceError } from "../src/lib/errors";
import type { SessionCreated, TranscriptTurn } from "../src/lib/types";
import { FakePeerConnection } from "./fake-rtc";
import { type Harness, harness as makeHarness } from "./harness";
import { type Seen, accepted, ids, networkDown, problem, scriptedFetch } from "./helpers";

const SESSION: SessionCreated = {
  session_id: "vs_abc",
  conversation_id: "cv_x.y",
  agent: { id: "elena", name: "Elena", voice: "marin" },
  client_secret: { value: "ek_single_use", expires_at: 2_000_000_000 },
  webrtc_url: "http://127.0.0.1:9001/openai/v1/realtime/calls?webrtcfilter=on",
  deployment: "gpt-realtime",
  memory: { enrich_url: "/memory/enrich", token: "mem-token", expires_at: 2_000_000_000 },
};

type Route = (seen: Seen) => Response | Error | "hang";

/** A fetch that answers the service and Azure like they do when all is well. */
function backend(overrides: { mint?: Route; sdp?: Route; enrich?: Route } = {}) {
  const mint: Route = overrides.mint ?? (() => new Response(JSON.stringify(SESSION), { status: 201 }));
  const sdp: Route = overrides.sdp ?? (() => new Response("v=0 fake-answer", { status: 201 }));
  const enrich: Route = overrides.enrich ?? ((seen) => accepted(ids(seen.body).length));
  return scriptedFetch((seen) => {
    FakePeerConnection.log.push(seen.url.includes("/realtime/sessions") ? "mint" : seen.url.includes("/calls") ? "sdp" : "enrich");
    if (seen.url.includes("/realtime/sessions")) return mint(seen);
    if (seen.url.includes("/realtime/calls")) return sdp(seen);
    return enrich(seen);
  });
}

function harness(fetchPair = backend(), options: Partial<VoiceClientOptions> = {}): Harness {
  return makeHarness(fetchPair, { flow: "mint", ...options });
}

describe("VoiceClient, browser-direct flow (flow: \"mint\")", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    FakePeerConnection.last = null;
    FakePeerConnection.log = [];
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("mints right after the offer, posts the SDP to Azure with the ephemeral key and connects", async () => {
    const { client, seen, states } = harness();
    await client.connect({ agent: "elena" });

    expect(states).toEqual(["microphone", "connecting", "connecting", "connected"]);
    expect(FakePeerConnection.log).toEqual(["createOffer with oai-events", "mint", "sdp", "setRemoteDescription"]);
    const [mint, sdp] = seen;
    expect(mint?.url).toBe("http://127.0.0.1:8000/realtime/sessions");
    expect(JSON.parse(mint?.body ?? "")).toEqual({ agent: "elena" });
    expect(sdp?.url).toBe(SESSION.webrtc_url);
    expect(sdp?.headers["authorization"]).toBe("Bearer ek_single_use");
    expect(sdp?.headers["content-type"]).toBe("application/sdp");
    expect(sdp?.body).toBe("v=0 fake-offer");
    const pc = FakePeerConnection.last;
    expect(pc?.channel?.label).toBe("oai-events");
    expect(pc?.remoteDescription).toEqual({ type: "answer", sdp: "v=0 fake-answer" });
    expect(pc?.config.iceServers).toEqual([]);
    expect(client.call).toEqual({
      callId: null,
      sessionId: "vs_abc",
      conversationId: "cv_x.y",
      agent: SESSION.agent,
      upstream: "azure-openai",
      expiresAt: null,
      memory: true,
    });
    expect(await client.audioStats()).toEqual({ inboundPackets: 120, inboundBytes: 9600, outboundPackets: 118, outboundBytes: 9440 });
  });

  it("sends the host's bearer token and the conversation to continue when minting", async () => {
    const { client, seen } = harness(backend(), { getAuthToken: async () => "user-jwt" });
    await client.connect({ agent: "sage", conversationId: "cv_old.mac" });
    expect(seen[0]?.headers["authorization"]).toBe("Bearer user-jwt");
    expect(JSON.parse(seen[0]?.body ?? "")).toEqual({ agent: "sage", conversation_id: "cv_old.mac" });
  });

  it("turns Azure's transcript events into ordered turns and saves them to memory with their item ids", async () => {
    const { client, seen } = harness();
    const transcripts: TranscriptTurn[][] = [];
    client.on("transcript", (turns) => transcripts.push(turns));
    await client.connect({ agent: "elena" });
    const channel = FakePeerConnection.last?.channel;
    channel?.receive({ type: "conversation.item.added", previous_item_id: null, item: { id: "item_u1", type: "message", role: "user" } });
    channel?.receive({ type: "conversation.item.added", previous_item_id: "item_u1", item: { id: "item_a1", type: "message", role: "assistant" } });
    channel?.receive({ type: "response.output_audio_transcript.done", item_id: "item_a1", transcript: "Hi, I'm Elena." });
    channel?.receive({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Hello?" });

    expect(client.transcript().map((t) => [t.id, t.role, t.text])).toEqual([
      ["item_u1", "user", "Hello?"],
      ["item_a1", "assistant", "Hi, I'm Elena."],
    ]);
    expect(transcripts.at(-1)).toHaveLength(2);

    await vi.advanceTimersByTimeAsync(300);
    const enrich = seen.filter((s) => s.url.endsWith("/memory/enrich"));
    expect(enrich).toHaveLength(1);
    expect(enrich[0]?.headers["authorization"]).toBe("Bearer mem-token");
    expect(JSON.parse(enrich[0]?.body ?? "")).toMatchObject({
      session_id: "vs_abc",
      messages: [
        { id: "item_u1", role: "user", text: "Hello?" },
        { id: "item_a1", role: "assistant", text: "Hi, I'm Elena." },
      ],
    });
    expect(client.memory?.state().status).toBe("saved");
  });

  it("keeps the call up while memory is unreachable", async () => {
    const { client, states } = harness(backend({ enrich: () => networkDown() }));
    await client.connect({ agent: "marcus" });
    const channel = FakePeerConnection.last?.channel;
    channel?.receive({ type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Anyone?" });
    await vi.advanceTimersByTimeAsync(5000);
    expect(client.state).toBe("connected");
    expect(states.at(-1)).toBe("connected");
    expect(client.memory?.state()).toMatchObject({ status: "retrying", pending: 1 });
  });

  it("reports who is speaking from VAD and output-buffer events", async () => {
    const { client } = harness();
    const speaking: string[] = [];
    client.on("speaking", (s) => speaking.push(`${s.user ? "U" : "-"}${s.assistant ? "A" : "-"}`));
    await client.connect({ agent: "elena" });
    const channel = FakePeerConnection.last?.channel;
    channel?.receive({ type: "input_audio_buffer.speech_started" });
    channel?.receive({ type: "input_audio_buffer.speech_stopped" });
    channel?.receive({ type: "output_audio_buffer.started" });
    channel?.receive({ type: "output_audio_buffer.stopped" });
    expect(speaking).toEqual(["U-", "--", "-A", "--"]);
  });

  it("explains a blocked microphone and never mints a key", async () => {
    const { client, seen, states, errors, getUserMedia } = harness();
    getUserMedia.mockRejectedValueOnce(new DOMException("denied", "NotAllowedError"));
    await expect(client.connect({ agent: "elena" })).rejects.toMatchObject({ kind: "microphone_denied" });
    expect(seen).toHaveLength(0);
    expect(states).toEqual(["microphone", "failed"]);
    expect(errors[0]?.message).toMatch(/Microphone access is blocked/);
  });

  it("explains a refused mint with the service's own detail", async () => {
    const { client, errors } = harness(backend({ mint: () => problem(429, "rate_limited", { "Retry-After": "12" }) }));
    await expect(client.connect({ agent: "elena" })).rejects.toBeInstanceOf(VoiceError);
    expect(errors[0]).toMatchObject({ kind: "rate_limited", retryAfterSeconds: 12, status: 429 });
    expect(errors[0]?.message).toBe("Too many calls started in a short time. Try again in 12 s.");
    expect(FakePeerConnection.last?.closed).toBe(true);
  });

  it("classifies service failures: unreachable, Azure down behind it, request refused", async () => {
    const cases: [Route, string][] = [
      [() => networkDown(), "service_unreachable"],
      [() => problem(502, "upstream_unavailable"), "service_unavailable"],
      [() => problem(422, "validation_failed"), "mint_refused"],
      [() => problem(401, "unauthenticated"), "unauthenticated"],
    ];
    for (const [mint, kind] of cases) {
      const { client } = harness(backend({ mint }));
      await expect(client.connect({ agent: "elena" })).rejects.toMatchObject({ kind });
    }
  });

  it("says Azure is unreachable when the SDP post fails, and refused when Azure rejects the key", async () => {
    const down = harness(backend({ sdp: () => networkDown() }));
    await expect(down.client.connect({ agent: "elena" })).rejects.toMatchObject({ kind: "azure_unreachable" });
    const refused = harness(
      backend({
        sdp: () =>
          new Response(JSON.stringify({ error: { code: "ephemeral_token_already_used", message: "used" } }), { status: 401 }),
      }),
    );
    await expect(refused.client.connect({ agent: "elena" })).rejects.toMatchObject({
      kind: "azure_refused",
      code: "ephemeral_token_already_used",
    });
  });

  it("fails with azure_unreachable when ICE never connects", async () => {
    const { client } = harness(backend(), { connectTimeoutMs: 5000 });
    const originalConnect = FakePeerConnection.prototype.connect;
    FakePeerConnection.prototype.connect = function noop() {};
    try {
      const attempt = client.connect({ agent: "elena" });
      const outcome = expect(attempt).rejects.toMatchObject({ kind: "azure_unreachable", code: "ice_timeout" });
      await vi.advanceTimersByTimeAsync(5000);
      await outcome;
    } finally {
      FakePeerConnection.prototype.connect = originalConnect;
    }
  });

  it("reports a dropped call after the reconnect grace period", async () => {
    const { client, states, errors } = harness(backend(), { reconnectGraceMs: 3000 });
    await client.connect({ agent: "elena" });
    FakePeerConnection.last?.setConnectionState("disconnected");
    expect(client.state).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(3000);
    expect(states.slice(-2)).toEqual(["reconnecting", "failed"]);
    expect(errors[0]?.kind).toBe("connection_lost");
  });

  it("recovers from a short network blip without failing", async () => {
    const { client, errors } = harness(backend(), { reconnectGraceMs: 3000 });
    await client.connect({ agent: "elena" });
    FakePeerConnection.last?.setConnectionState("disconnected");
    await vi.advanceTimersByTimeAsync(1000);
    FakePeerConnection.last?.setConnectionState("connected");
    await vi.advanceTimersByTimeAsync(5000);
    expect(client.state).toBe("connected");
    expect(errors).toEqual([]);
  });

  it("hangs up: releases the microphone, closes the connection and saves final turns", async () => {
    const { client, seen, microphone, states } = harness();
    await client.connect({ agent: "elena" });
    FakePeerConnection.last?.channel?.receive({
      type: "response.output_audio_transcript.done",
      item_id: "item_a1",
      transcript: "Goodbye.",
    });
    client.hangUp();
    await vi.advanceTimersByTimeAsync(0);
    expect(states.at(-1)).toBe("ended");
    expect(microphone.tracks[0]?.stopped).toBe(true);
    expect(FakePeerConnection.last?.closed).toBe(true);
    expect(FakePeerConnection.last?.channel?.closed).toBe(true);
    expect(seen.filter((s) => s.url.endsWith("/memory/enrich")).map((s) => ids(s.body))).toEqual([["item_a1"]]);
    expect(client.transcript().map((t) => t.text)).toEqual(["Goodbye."]);
  });

  it("cancels a call that is hung up while minting, without posting the offer", async () => {
    let release: (r: Response) => void = () => undefined;
    const pending = new Promise<Response>((resolve) => {
      release = resolve;
    });
    const fetchPair = backend();
    const { client, seen, states } = harness({
      seen: fetchPair.seen,
      fetch: (input, init) => (input.includes("/realtime/sessions") ? pending : fetchPair.fetch(input, init)),
    });
    const attempt = client.connect({ agent: "elena" });
    await vi.advanceTimersByTimeAsync(10);
    client.hangUp();
    release(new Response(JSON.stringify(SESSION), { status: 201 }));
    await expect(attempt).resolves.toBeUndefined();
    expect(seen.filter((s) => s.url.includes("/calls"))).toEqual([]);
    expect(states.at(-1)).toBe("ended");
  });

  it("runs the call without memory when the service grants none", async () => {
    const { client, seen } = harness(
      backend({ mint: () => new Response(JSON.stringify({ ...SESSION, memory: null }), { status: 201 }) }),
    );
    await client.connect({ agent: "elena" });
    FakePeerConnection.last?.channel?.receive({
      type: "conversation.item.input_audio_transcription.completed",
      item_id: "item_u1",
      transcript: "Hello",
    });
    await vi.advanceTimersByTimeAsync(1000);
    expect(client.call?.memory).toBe(false);
    expect(client.transcript()).toHaveLength(1);
    expect(seen.filter((s) => s.url.endsWith("/memory/enrich"))).toEqual([]);
  });

  it("mutes and unmutes the microphone track", async () => {
    const { client, microphone } = harness();
    const muted: boolean[] = [];
    client.on("muted", (m) => muted.push(m));
    await client.connect({ agent: "elena" });
    client.setMuted(true);
    expect(microphone.tracks[0]?.enabled).toBe(false);
    client.setMuted(false);
    expect(microphone.tracks[0]?.enabled).toBe(true);
    expect(muted).toEqual([true, false]);
  });

  it("reports a browser without WebRTC as unsupported", async () => {
    const { client } = harness(backend(), { rtc: { mediaDevices: undefined, RTCPeerConnection: undefined } });
    await expect(client.connect({ agent: "elena" })).rejects.toMatchObject({ kind: "unsupported" });
  });
});
