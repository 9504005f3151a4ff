/**
 * engram-voice browser client: talk to Engram agents over WebRTC straight to Azure (Voice
 * Live or Azure OpenAI GPT Realtime), calls set up through the service, with live
 * transcripts and a memory outbox. Framework-agnostic.
 *
 * ```ts
 * const client = new VoiceClient();              // same origin; pass { baseUrl, getAuthToken } otherwise
 * client.on("connection", ({ state }) => …);
 * client.on("transcript", (turns) => …);
 * client.on("memory", (memory) => …);
 * client.on("error", (error) => show(error.message));
 * await client.connect({ agent: "elena" });
 * client.setMuted(true);
 * client.hangUp();
 * ```
 */

export { type EndCallOptions, type ServiceOptions, createCall, endCall, mintSession } from "./api";
export { type BackoffPolicy, defaultBackoff, isRetryableStatus, retryDelayMs } from "./backoff";
export {
  type AudioStats,
  type CallFlow,
  type CallInfo,
  type ConnectOptions,
  type ConnectionChange,
  type ConnectionState,
  type EndReason,
  type RtcEnvironment,
  type SpeakingState,
  VoiceClient,
  type VoiceClientEvents,
  type VoiceClientOptions,
} from "./client";
export { type Clock, systemClock } from "./clock";
export { Emitter, type EventMap, type Listener } from "./emitter";
export { VoiceError, type VoiceErrorKind, describeError, microphoneError } from "./errors";
export { type FetchLike, TimeoutError, retryAfterMs } from "./http";
export {
  ENRICH_LIMITS,
  type MemoryGrant,
  MemoryOutbox,
  type MemoryState,
  type MemoryStatus,
  type OutboxEvents,
  type OutboxOptions,
  type SessionOutbox,
} from "./outbox";
export { MemoryStorage, type StorageLike, defaultStorage } from "./storage";
export {
  GA_EVENT_NAMES,
  type ServerEvent,
  TranscriptAssembler,
  type TranscriptEvents,
  type TranscriptOptions,
  normaliseEvent,
} from "./transcript";
export { ALL_EVENT_CHANNELS, EVENT_CHANNELS, eventChannelFor } from "./upstreams";
export type * from "./types";
export {
  type CallMemoryProgress,
  type CallMemoryStatus,
  MemoryProgress,
  type MemoryProgressEvents,
  type MemoryProgressOptions,
  type MemoryProgressWire,
  type ProgressInputs,
  deriveProgress,
  progressUrl,
} from "./memory-progress";
