/**
 * `useVoiceSession`: a {@link VoiceClient} owned by a React component. The client is created
 * when the component mounts and disposed when it unmounts (the call is hung up at the
 * service, the peer connection closed, every timer and page listener removed), so a
 * component that renders the hook is the whole call's lifetime. The current call's memory
 * comes from a {@link MemoryProgress} following the client (as the demo page's badge does),
 * disposed with it: no progress request after unmount.
 */

import { useCallback, useEffect, useRef, useState } from "react";

import type { ConnectOptions, VoiceClientOptions } from "../call-types.js";
import { VoiceClient } from "../client.js";
import { type MemoryProgress, type MemoryProgressOptions, followCallMemory } from "../memory-progress.js";
import type { AgentId } from "../types.js";
import { type VoiceSessionSnapshot, afterConnection, snapshotOf } from "./snapshot.js";

export type { VoiceSessionSnapshot } from "./snapshot.js";

/**
 * Options of {@link useVoiceSession}: the agent to call and the {@link VoiceClientOptions}.
 * Client options are read once, when the component mounts; `agent`, `conversationId` and
 * `getAuthToken` are always read fresh, so they may change between renders.
 */
export interface UseVoiceSessionOptions extends VoiceClientOptions {
  /** The agent {@link VoiceSession.connect} calls (unless it is given another). */
  agent: AgentId;
  /** Continue this earlier conversation of the same user. */
  conversationId?: string;
  /** Use this client instead of creating one; the hook then never disposes it. */
  client?: VoiceClient;
  /** How the call's memory progress is polled (defaults: 1 s doubling to 15 s, see {@link MemoryProgress}). */
  memoryProgress?: Pick<MemoryProgressOptions, "minDelayMs" | "maxDelayMs" | "settleTimeoutMs" | "requestTimeoutMs">;
}

/** What {@link useVoiceSession} returns: the session's state and what to do with it. */
export interface VoiceSession extends VoiceSessionSnapshot {
  /** The agent the next {@link connect} calls. */
  agent: AgentId;
  /**
   * Start a call (hanging up the current one). Resolves once audio flows, or when the call
   * failed or was hung up; never rejects: a failure shows as `state: "failed"` and `error`.
   */
  connect(options?: Partial<ConnectOptions>): Promise<void>;
  /** End the call; resolves once the service was told (bounded) and never rejects. */
  hangUp(): Promise<void>;
  /** Mute or unmute the microphone; the call stays up. */
  setMuted(muted: boolean): void;
  /** Flip {@link muted}. */
  toggleMuted(): void;
  /** The underlying client (null until the component mounted), for events the hook does not mirror. */
  client: VoiceClient | null;
}

/** Call an Engram agent from a React component; see the module comment for the lifetime. */
export function useVoiceSession(options: UseVoiceSessionOptions): VoiceSession {
  const latest = useRef(options);
  useEffect(() => {
    latest.current = options;
  });
  const [client, setClient] = useState<VoiceClient | null>(options.client ?? null);
  const [snapshot, setSnapshot] = useState<VoiceSessionSnapshot>(() => snapshotOf(options.client ?? null));
  const external = options.client;

  useEffect(() => {
    const owned = external === undefined;
    const current = external ?? createClient(latest);
    const progress = followMemory(current, latest.current);
    const update = (change: (previous: VoiceSessionSnapshot) => VoiceSessionSnapshot): void => setSnapshot(change);
    const unsubscribe = [
      current.on("connection", (change) => update((s) => afterConnection(s, change))),
      current.on("transcript", (transcript) => update((s) => ({ ...s, transcript }))),
      current.on("memory", (outbox) => update((s) => ({ ...s, outbox }))),
      ...(progress ? [progress.on("progress", (memory) => update((s) => ({ ...s, memory })))] : []),
      current.on("speaking", (speaking) => update((s) => ({ ...s, speaking }))),
      current.on("muted", (muted) => update((s) => ({ ...s, muted }))),
      current.on("error", (error) => update((s) => ({ ...s, error }))),
      current.on("warning", (warning) => update((s) => ({ ...s, warning }))),
    ];
    setClient(current);
    setSnapshot(snapshotOf(current, progress));
    return () => {
      for (const remove of unsubscribe) remove();
      progress?.dispose();
      if (owned) current.dispose();
    };
  }, [external]);

  const connect = useCallback(
    async (override: Partial<ConnectOptions> = {}): Promise<void> => {
      if (!client) return;
      const { agent, conversationId } = { ...latest.current, ...override };
      try {
        await client.connect(conversationId ? { agent, conversationId } : { agent });
      } catch {
        // Already surfaced: the client emitted `error` and `connection` (`failed`).
      }
    },
    [client],
  );
  const hangUp = useCallback(async (): Promise<void> => client?.hangUp(), [client]);
  const setMuted = useCallback((muted: boolean): void => client?.setMuted(muted), [client]);
  const toggleMuted = useCallback((): void => client?.setMuted(!client.muted), [client]);

  return { ...snapshot, agent: options.agent, connect, hangUp, setMuted, toggleMuted, client };
}

/** A client from the hook's options; `getAuthToken` always calls the latest one given. */
function createClient(latest: { readonly current: UseVoiceSessionOptions }): VoiceClient {
  const { agent: _agent, conversationId: _conversation, client: _client, memoryProgress: _progress, ...clientOptions } = latest.current;
  return new VoiceClient({
    ...clientOptions,
    ...(clientOptions.getAuthToken ? { getAuthToken: () => latest.current.getAuthToken?.() } : {}),
  });
}

/** The progress of `client`'s calls' memory, polled with the hook's `fetch`, `clock` and timings (null: no memory). */
function followMemory(client: VoiceClient, options: UseVoiceSessionOptions): MemoryProgress | null {
  const { fetch, clock, memoryProgress } = options;
  return followCallMemory(client, { ...memoryProgress, ...(fetch ? { fetch } : {}), ...(clock ? { clock } : {}) });
}
