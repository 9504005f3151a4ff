/**
 * What a {@link useVoiceSession} caller renders: a plain snapshot of a {@link VoiceClient}
 * (call state, call details, transcript, the call's memory, speaking, mute, last error and
 * warning), and the pure reducer that keeps it up to date from the client's events.
 */

import type { CallInfo, ConnectionChange, ConnectionState, EndReason, SpeakingState } from "../call-types.js";
import type { VoiceClient } from "../client.js";
import type { VoiceError } from "../errors.js";
import { CALL_MEMORY_IDLE, CALL_MEMORY_OFF, type CallMemoryProgress, type MemoryProgress } from "../memory-progress.js";
import type { MemoryState } from "../outbox.js";
import type { TranscriptTurn } from "../types.js";

/** The state of a voice session as the UI shows it. */
export interface VoiceSessionSnapshot {
  /** `idle`, `microphone`, `connecting`, `connected`, `reconnecting`, `ended` or `failed`. */
  state: ConnectionState;
  /** Whether a call is being set up or running (`microphone` … `reconnecting`). */
  active: boolean;
  /** The current (or last) call's details: agent and voice, upstream, session, memory grant. */
  call: CallInfo | null;
  /** Why the last call ended, while `state` is `ended`. */
  endReason: EndReason | null;
  /** The current call's turns in conversation order, partial ones included. */
  transcript: TranscriptTurn[];
  /**
   * The current call's memory, as far as the service reports it (`off` | `idle` | `queued` |
   * `retrying` | `saved` | `failed`, with counts and `retryAt`): `saved` only once every turn
   * of the call is in the agent's memory. Starts afresh with each call.
   */
  memory: CallMemoryProgress;
  /** The browser's memory outbox across calls (turns this page still has to post), or null when memory is off. */
  outbox: MemoryState | null;
  speaking: SpeakingState;
  muted: boolean;
  /** Why the last call failed (its message is fit to show as is); cleared by the next connect. */
  error: VoiceError | null;
  /** The last warning (autoplay blocked, the call ended remotely, …); cleared by the next connect. */
  warning: string | null;
}

/** Connection states in which a call is being set up or running. */
const ACTIVE: ReadonlySet<ConnectionState> = new Set(["microphone", "connecting", "connected", "reconnecting"]);

/** The snapshot of `client` and its call's memory `progress` as they are now (or of no client yet). */
export function snapshotOf(client: VoiceClient | null, progress: MemoryProgress | null = null): VoiceSessionSnapshot {
  const state = client?.state ?? "idle";
  return {
    state,
    active: ACTIVE.has(state),
    call: client?.call ?? null,
    endReason: null,
    transcript: client?.transcript() ?? [],
    memory: progress?.current() ?? (client && !client.memory ? CALL_MEMORY_OFF : CALL_MEMORY_IDLE),
    outbox: client?.memory?.state() ?? null,
    speaking: client?.speaking ?? { user: false, assistant: false },
    muted: client?.muted ?? false,
    error: null,
    warning: null,
  };
}

/** The snapshot after a `connection` event: a new attempt clears the last error and warning. */
export function afterConnection(previous: VoiceSessionSnapshot, change: ConnectionChange): VoiceSessionSnapshot {
  const starting = change.state === "microphone";
  return {
    ...previous,
    state: change.state,
    active: ACTIVE.has(change.state),
    call: change.call,
    endReason: change.state === "ended" ? (change.reason ?? null) : null,
    error: change.state === "failed" ? (change.error ?? previous.error) : starting ? null : previous.error,
    warning: starting ? null : previous.warning,
  };
}
