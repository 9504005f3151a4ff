/** What the demo page says about each state, in plain words. */

import type { ConnectionState, MemoryState, SpeakingState } from "../lib";

/** A label and a colour tone for a status pill. */
export interface Label {
  text: string;
  tone: "neutral" | "ok" | "busy" | "warn" | "bad";
}

/** The agents of the demo (the service's catalogue: src/engram_voice/agents/agents.toml). */
export const AGENTS = [
  { id: "elena", name: "Elena", style: "Warm and expressive" },
  { id: "marcus", name: "Marcus", style: "Clear and professional" },
  { id: "sage", name: "Sage", style: "Narrative storyteller" },
] as const;

/** The label of a connection state. */
export function connectionLabel(state: ConnectionState, agentName: string): Label {
  switch (state) {
    case "idle":
      return { text: "Not connected", tone: "neutral" };
    case "microphone":
      return { text: "Waiting for the microphone…", tone: "busy" };
    case "connecting":
      return { text: `Connecting to ${agentName}…`, tone: "busy" };
    case "connected":
      return { text: `Connected to ${agentName}`, tone: "ok" };
    case "reconnecting":
      return { text: "Connection unstable, reconnecting…", tone: "warn" };
    case "ended":
      return { text: "Call ended", tone: "neutral" };
    case "failed":
      return { text: "Call failed", tone: "bad" };
  }
}

/** Who is speaking, as a short sentence. */
export function speakingLabel(speaking: SpeakingState, agentName: string, connected: boolean): string {
  if (!connected) return "—";
  if (speaking.user && speaking.assistant) return `You and ${agentName}`;
  if (speaking.user) return "You";
  if (speaking.assistant) return agentName;
  return "Nobody";
}

const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The label of the memory outbox state. */
export function memoryLabel(memory: MemoryState, now: number = Date.now()): Label {
  switch (memory.status) {
    case "idle":
      return { text: "Nothing to save yet", tone: "neutral" };
    case "pending":
      return { text: `${plural(memory.pending, "turn")} waiting to be saved`, tone: "busy" };
    case "saving":
      return { text: `Saving ${plural(memory.pending, "turn")}…`, tone: "busy" };
    case "saved":
      return { text: `Saved (${plural(memory.saved, "turn")})`, tone: "ok" };
    case "retrying": {
      const seconds = memory.retryAt === null ? 0 : Math.max(0, Math.ceil((memory.retryAt - now) / 1000));
      const when = seconds > 0 ? `retrying in ${seconds} s` : "retrying now";
      return { text: `Memory unreachable — ${plural(memory.pending, "turn")} kept, ${when}`, tone: "warn" };
    }
    case "failed":
      return { text: `Couldn't save ${plural(memory.failed, "turn")}`, tone: "bad" };
  }
}
