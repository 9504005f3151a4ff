/**
 * The public types of a {@link VoiceClient}: connection states, call details, events and
 * options. Kept apart from the client so hosts (and the React entry) can import them alone.
 */

import type { ServiceOptions } from "./api.js";
import type { Clock } from "./clock.js";
import type { VoiceClient } from "./client.js";
import type { VoiceError } from "./errors.js";
import type { MemoryOutbox, MemoryState, OutboxOptions } from "./outbox.js";
import type { ServerEvent, TranscriptOptions } from "./transcript.js";
import type { AgentId, TranscriptTurn, Upstream } from "./types.js";

/**
 * Where a call is:
 * `idle` (none yet), `microphone` (asking for it), `connecting` (offer, mint, SDP exchange,
 * ICE), `connected` (audio flows), `reconnecting` (the network blipped; ICE is recovering),
 * `ended` (hung up), `failed` (see the `error` event).
 */
export type ConnectionState = "idle" | "microphone" | "connecting" | "connected" | "reconnecting" | "ended" | "failed";

/**
 * Why a call ended: `hangup` ({@link VoiceClient.hangUp}), `page_unload` (the page went
 * away), `max_duration` (the service ended it at its `expires_at`), `remote_closed` (the
 * service or Azure closed it before that).
 */
export type EndReason = "hangup" | "page_unload" | "max_duration" | "remote_closed";

/**
 * How a call is set up: `call` (default) through the service's `POST /realtime/calls`, for
 * every agent; `mint` browser-direct with a single-use key (Azure OpenAI agents only).
 */
export type CallFlow = "call" | "mint";

/** Who is speaking right now, from Azure's VAD and output-buffer events. */
export interface SpeakingState {
  user: boolean;
  assistant: boolean;
}

/** The current call, as far as the UI needs it. */
export interface CallInfo {
  /** The service's call id (`rc_…`); null in the browser-direct flow. */
  callId: string | null;
  sessionId: string;
  conversationId: string;
  /** `voice` is the name of the voice the agent speaks with (e.g. `en-US-Ava:DragonHDLatestNeural`). */
  agent: { id: string; name: string; voice: string };
  /** The Azure service carrying the audio: `voice-live` or `azure-openai`. */
  upstream: Upstream;
  /** Unix seconds when the service ends the call (its maximum duration); null browser-direct. */
  expiresAt: number | null;
  /** Whether the service granted memory for this call (turns are saved to the agent's memory). */
  memory: boolean;
}

/** Payload of the `connection` event. */
export interface ConnectionChange {
  state: ConnectionState;
  call: CallInfo | null;
  /** Set when `state` is `failed`. */
  error?: VoiceError;
  /** Set when `state` is `ended`. */
  reason?: EndReason;
}

/** Audio counters of the current call (from `RTCPeerConnection.getStats`). */
export interface AudioStats {
  inboundPackets: number;
  inboundBytes: number;
  outboundPackets: number;
  outboundBytes: number;
}

/** Events of a {@link VoiceClient}. */
export interface VoiceClientEvents extends Record<string, unknown> {
  connection: ConnectionChange;
  speaking: SpeakingState;
  /** One turn appeared or changed. */
  turn: TranscriptTurn;
  /** The whole transcript of the current call, in conversation order, after any change. */
  transcript: TranscriptTurn[];
  memory: MemoryState;
  muted: boolean;
  /** A call failed; the message is in plain words (see {@link describeError}). */
  error: VoiceError;
  /** Something worth a note (e.g. autoplay blocked, an Azure error event, why the service or Azure ended the call). */
  warning: string;
  /** Every event Azure sent on the data channel, for hosts that want more. */
  serverEvent: ServerEvent;
}

/** Browser APIs the client uses; injectable for tests and unusual hosts. */
export interface RtcEnvironment {
  RTCPeerConnection?: typeof RTCPeerConnection;
  mediaDevices?: Pick<MediaDevices, "getUserMedia">;
  /** Creates the element remote audio plays in (default `new Audio()`). */
  createAudio?: () => HTMLAudioElement;
}

/** Options of a {@link VoiceClient}. */
export interface VoiceClientOptions extends ServiceOptions {
  /** How calls are set up (default `call`: through the service, for every agent). */
  flow?: CallFlow;
  /** The memory outbox (created with defaults unless given), or false for no memory. */
  memory?: MemoryOutbox | OutboxOptions | false;
  /** Element that plays the agent's voice; one is created when absent. */
  audioElement?: HTMLAudioElement;
  /** Microphone constraints (default: echo cancellation, noise suppression, AGC). */
  audioConstraints?: MediaTrackConstraints;
  /** ICE servers for the peer connection (default: none, as Azure's samples do). */
  iceServers?: RTCIceServer[];
  /** Longest wait for local ICE candidates before sending the offer (default 1500 ms). */
  iceGatheringTimeoutMs?: number;
  /** Browser-direct flow: bound on the SDP exchange with Azure (default 15000 ms). */
  sdpTimeoutMs?: number;
  /** Bound from the SDP answer to an open media connection (default 20000 ms). */
  connectTimeoutMs?: number;
  /** How long a dropped connection may try to recover before the call fails (default 10000 ms). */
  reconnectGraceMs?: number;
  transcript?: TranscriptOptions;
  /**
   * Listen to `pagehide`/`visibilitychange`/`online` to beacon and retry memory, and to hang
   * up at the service (keepalive `DELETE`) when the page goes away (default true).
   */
  pageLifecycle?: boolean;
  rtc?: RtcEnvironment;
  clock?: Clock;
}

/** What to connect to. */
export interface ConnectOptions {
  agent: AgentId;
  /** Continue an earlier conversation of the same user (returned by a previous call). */
  conversationId?: string;
}
