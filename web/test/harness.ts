/** A VoiceClient wired to the fake RTC, a scripted fetch and an in-memory outbox. */

import { vi } from "vitest";

import { type ConnectionChange, type ConnectionState, VoiceClient, type VoiceClientOptions } from "../src/lib/client";
import type { VoiceError } from "../src/lib/errors";
import { MemoryOutbox } from "../src/lib/outbox";
import { MemoryStorage } from "../src/lib/storage";
import type { Clock } from "../src/lib/clock";
import { FakePeerConnection, FakeStream } from "./fake-rtc";
import type { Seen } from "./helpers";

export const BASE_URL = "http://127.0.0.1:8000";

export interface Harness {
  client: VoiceClient;
  seen: Seen[];
  states: ConnectionState[];
  changes: ConnectionChange[];
  errors: VoiceError[];
  warnings: string[];
  microphone: FakeStream;
  getUserMedia: ReturnType<typeof vi.fn>;
}

/** The fake browser a client runs in: microphone, peer connection, audio element. */
export interface FakeBrowser {
  /** Client options wiring the fakes, the scripted fetch and an in-memory outbox. */
  options: VoiceClientOptions;
  microphone: FakeStream;
  getUserMedia: ReturnType<typeof vi.fn>;
}

/** Options for a client on `fetchPair` with the fake RTC and an in-memory outbox on `clock`. */
export function fakeBrowser(
  fetchPair: { fetch: (input: string, init?: RequestInit) => Promise<Response> },
  clock?: Clock,
): FakeBrowser {
  const microphone = new FakeStream();
  const getUserMedia = vi.fn(async () => microphone as unknown as MediaStream);
  const audio = { autoplay: false, srcObject: null as unknown, play: vi.fn(async () => undefined), pause: vi.fn() };
  const options: VoiceClientOptions = {
    baseUrl: BASE_URL,
    fetch: fetchPair.fetch,
    memory: new MemoryOutbox({ fetch: fetchPair.fetch, baseUrl: BASE_URL, storage: new MemoryStorage(), sendBeacon: null, ...(clock ? { clock } : {}) }),
    pageLifecycle: false,
    rtc: {
      RTCPeerConnection: FakePeerConnection as unknown as typeof RTCPeerConnection,
      mediaDevices: { getUserMedia },
      createAudio: () => audio as unknown as HTMLAudioElement,
    },
    ...(clock ? { clock } : {}),
  };
  return { options, microphone, getUserMedia };
}

/** A client on `fetchPair` with the fake RTC; `options` override the defaults. */
export function harness(
  fetchPair: { fetch: (input: string, init?: RequestInit) => Promise<Response>; seen: Seen[] },
  options: Partial<VoiceClientOptions> = {},
): Harness {
  const { options: defaults, microphone, getUserMedia } = fakeBrowser(fetchPair);
  const client = new VoiceClient({ ...defaults, ...options });
  const states: ConnectionState[] = [];
  const changes: ConnectionChange[] = [];
  const errors: VoiceError[] = [];
  const warnings: string[] = [];
  client.on("connection", (change) => {
    states.push(change.state);
    changes.push(change);
  });
  client.on("error", (error) => errors.push(error));
  client.on("warning", (warning) => warnings.push(warning));
  return { client, seen: fetchPair.seen, states, changes, errors, warnings, microphone, getUserMedia };
}
