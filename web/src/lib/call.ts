/**
 * One call attempt's resources (peer connection, channels, microphone, transcript, timers)
 * and the call details the service's answer brings. The {@link VoiceClient} keeps at most
 * one; everything here is released together when the attempt ends.
 */

import type { CallInfo } from "./call-types.js";
import type { VoiceClient } from "./client.js";
import type { Clock, TimerHandle } from "./clock.js";
import type { TranscriptAssembler } from "./transcript.js";
import type { CallCreated, SessionCreated } from "./types.js";

/** Thrown inside a call attempt that was hung up, failed or replaced; never reaches the caller. */
export class Cancelled extends Error {}

/** The resources of one call attempt. */
export class Call {
  info: CallInfo | null = null;
  pc: RTCPeerConnection | null = null;
  /** The events channels: one per upstream label until the answer names the upstream. */
  channels: RTCDataChannel[] = [];
  /** The caller's bearer token from the call's setup, for the unload hang-up (memory only). */
  authToken: string | null = null;
  /** Whether the service was already asked to end the call. */
  hungUp = false;
  microphone: MediaStream | null = null;
  /** Unsubscribe functions of the client's listeners on this call's objects. */
  readonly unsubscribe: (() => void)[] = [];
  readonly #timers = new Set<TimerHandle>();

  constructor(
    readonly attempt: number,
    readonly assembler: TranscriptAssembler,
    readonly clock: Clock,
  ) {}

  /** Run `callback` after `ms` unless the call is released first. */
  timer(callback: () => void, ms: number): TimerHandle {
    const handle = this.clock.setTimeout(() => {
      this.#timers.delete(handle);
      callback();
    }, ms);
    this.#timers.add(handle);
    return handle;
  }

  /** Cancel a timer set with {@link timer}. */
  clearTimer(handle: TimerHandle): void {
    this.clock.clearTimeout(handle);
    this.#timers.delete(handle);
  }

  /** Cancel every pending timer of the call. */
  clearTimers(): void {
    for (const timer of this.#timers) this.clock.clearTimeout(timer);
    this.#timers.clear();
  }

  /** Close every events channel but the one labelled `label` (none opened on the wire yet). */
  keepChannel(label: string): void {
    for (const channel of this.channels.filter((c) => c.label !== label)) {
      channel.onclose = null;
      channel.onmessage = null;
      channel.close();
    }
    this.channels = this.channels.filter((c) => c.label === label);
  }

  /** Close the channels and the peer connection (idempotent). */
  closePeer(): void {
    try {
      for (const channel of this.channels) channel.close();
      this.pc?.close();
    } catch {
      // already closed
    }
  }
}

/** The call details of a `POST /realtime/calls` answer (default flow). */
export function callInfoFromCall(created: CallCreated): CallInfo {
  return {
    callId: created.call_id,
    sessionId: created.session_id,
    conversationId: created.conversation_id,
    agent: { id: created.agent.id, name: created.agent.name, voice: created.agent.voice },
    upstream: created.upstream,
    expiresAt: typeof created.expires_at === "number" ? created.expires_at : null,
    memory: false,
  };
}

/** The call details of a `POST /realtime/sessions` answer (browser-direct flow). */
export function callInfoFromSession(session: SessionCreated): CallInfo {
  return {
    callId: null,
    sessionId: session.session_id,
    conversationId: session.conversation_id,
    agent: { ...session.agent },
    upstream: "azure-openai",
    expiresAt: null,
    memory: false,
  };
}
