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

export { type EndCallOptions, type ServiceOptions, createCall, endCall, mintSession } from "./api.js";
export { type BackoffPolicy, defaultBackoff, isRetryableStatus, retryDelayMs } from "./backoff.js";
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
} from "./client.js";
export { type Clock, systemClock } from "./clock.js";
export { Emitter, type EventMap, type Listener } from "./emitter.js";
export { VoiceError, type VoiceErrorKind, describeError, microphoneError } from "./errors.js";
export { type FetchLike, TimeoutError, retryAfterMs } from "./http.js";
export {
  ENRICH_LIMITS,
  type MemoryGrant,
  MemoryOutbox,
  type MemoryState,
  type MemoryStatus,
  type OutboxEvents,
  type OutboxOptions,
  type SessionOutbox,
} from "./outbox.js";
export { MemoryStorage, type StorageLike, defaultStorage } from "./storage.js";
export {
  GA_EVENT_NAMES,
  type ServerEvent,
  TranscriptAssembler,
  type TranscriptEvents,
  type TranscriptOptions,
  normaliseEvent,
} from "./transcript.js";
export { ALL_EVENT_CHANNELS, EVENT_CHANNELS, eventChannelFor } from "./upstreams.js";
export type * from "./types.js";
export {
  CALL_MEMORY_IDLE,
  CALL_MEMORY_OFF,
  type CallMemoryProgress,
  type CallMemoryStatus,
  type CallSource,
  MemoryProgress,
  type MemoryProgressEvents,
  type MemoryProgressOptions,
  type MemoryProgressWire,
  type ProgressInputs,
  deriveProgress,
  followCallMemory,
  progressUrl,
} from "./memory-progress.js";
