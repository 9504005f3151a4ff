/**
 * Following a call's `RTCPeerConnection`: waiting for ICE gathering (no trickle ICE), the
 * connection's life (connected, a network blip, failure) and its audio counters.
 */

import type { AudioStats } from "./call-types.js";
import type { Call } from "./call.js";
import { VoiceError } from "./errors.js";
import type { TimerHandle } from "./clock.js";

/** Resolve when ICE gathering completes or after `timeoutMs` (host candidates come at once). */
export function iceGathered(call: Call, pc: RTCPeerConnection, timeoutMs: number): Promise<void> {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      pc.removeEventListener("icegatheringstatechange", onChange);
      call.clearTimer(timer);
      resolve();
    };
    const onChange = (): void => {
      if (pc.iceGatheringState === "complete") done();
    };
    pc.addEventListener("icegatheringstatechange", onChange);
    const timer = call.timer(done, timeoutMs);
  });
}

/** What {@link watchConnection} reports back to the client. */
export interface ConnectionWatch {
  /** Whether the call is still the client's live attempt; events of a stale one are ignored. */
  isCurrent(): boolean;
  /** The media connection is up (first time, or again after a blip). */
  connected(): void;
  /** The connection dropped after it was up; ICE is trying to recover. */
  reconnecting(): void;
  /** The connection was lost for good after it was up. */
  lost(error: VoiceError): void;
  /** Bound from the SDP answer to an open connection (ms). */
  connectTimeoutMs: number;
  /** How long a dropped connection may try to recover (ms). */
  reconnectGraceMs: number;
}

/**
 * Follow the peer connection; the promise settles on the first connect (or rejects with
 * `azure_unreachable` when it never connects). Later drops are reported through `watch`.
 */
export function watchConnection(call: Call, pc: RTCPeerConnection, watch: ConnectionWatch): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let everConnected = false;
    let grace: TimerHandle | null = null;
    let deadline: TimerHandle | null = null;
    const armDeadline = (): void => {
      deadline = call.timer(() => reject(new VoiceError("azure_unreachable", { code: "ice_timeout" })), watch.connectTimeoutMs);
    };
    pc.addEventListener("signalingstatechange", () => {
      if (pc.signalingState === "stable" && deadline === null && !everConnected) armDeadline();
    });
    pc.addEventListener("connectionstatechange", () => {
      if (!watch.isCurrent()) return;
      const state = pc.connectionState;
      if (state === "connected") {
        if (grace !== null) call.clearTimer(grace);
        if (deadline !== null) call.clearTimer(deadline);
        grace = null;
        everConnected = true;
        watch.connected();
        resolve();
      } else if (state === "disconnected" && everConnected) {
        watch.reconnecting();
        grace ??= call.timer(() => watch.lost(new VoiceError("connection_lost", { code: "ice_disconnected" })), watch.reconnectGraceMs);
      } else if (state === "failed") {
        if (everConnected) watch.lost(new VoiceError("connection_lost", { code: "ice_failed" }));
        else reject(new VoiceError("azure_unreachable", { code: "ice_failed" }));
      }
    });
  });
}

/** One entry of an `RTCStatsReport`, as far as audio counters go. */
interface RtpStats {
  type?: string;
  kind?: string;
  packetsReceived?: number;
  bytesReceived?: number;
  packetsSent?: number;
  bytesSent?: number;
}

/** Sum the audio RTP counters of `pc` (video and other entries are ignored). */
export async function readAudioStats(pc: RTCPeerConnection): Promise<AudioStats> {
  const stats: AudioStats = { inboundPackets: 0, inboundBytes: 0, outboundPackets: 0, outboundBytes: 0 };
  const report = await pc.getStats();
  report.forEach((entry: RtpStats) => {
    if (entry.kind !== "audio") return;
    if (entry.type === "inbound-rtp") {
      stats.inboundPackets += entry.packetsReceived ?? 0;
      stats.inboundBytes += entry.bytesReceived ?? 0;
    } else if (entry.type === "outbound-rtp") {
      stats.outboundPackets += entry.packetsSent ?? 0;
      stats.outboundBytes += entry.bytesSent ?? 0;
    }
  });
  return stats;
}
