/** What the demo page says about each state, in plain words. */

import type { CallMemoryProgress, ConnectionState, SpeakingState } from "../lib";

/** A label and a colour tone for a status pill. */
export interface Label {
  text: string;
  tone: "neutral" | "ok" | "busy" | "warn" | "bad";
}

/**
 * The agents of the demo (the service's catalogue: src/engram_voice/agents/agents.toml).
 * `voice` is a short label of the voice the shipped catalogue gives each agent on Voice
 * Live, shown before the first call; once connected the page shows (and remembers) the
 * voice name the service answered with, which is the truth for this deployment.
 */
export const AGENTS = [
  { id: "elena", name: "Elena", style: "Warm and expressive", voice: "Ava (HD neural)" },
  { id: "marcus", name: "Marcus", style: "Clear and professional", voice: "Guy (neural)" },
  { id: "sage", name: "Sage", style: "Narrative storyteller", voice: "Ava (HD neural)" },
] as const;

/** How the page names an upstream. */
export function upstreamLabel(upstream: string): string {
  if (upstream === "voice-live") return "Azure AI Voice Live";
  if (upstream === "azure-openai") return "Azure OpenAI";
  return upstream;
}

/** A short label of a voice name from the service (`en-US-Ava:DragonHDLatestNeural` → `Ava (HD neural)`). */
export function voiceLabel(voice: string): string {
  const azure = /^[a-z]{2,3}-[A-Z]{2,4}-([A-Za-z]+?)(?::(DragonHD[A-Za-z]*))?(Neural)?$/.exec(voice);
  if (!azure) return voice; // an OpenAI voice (marin, cedar) or anything else: as is
  const [, name, hd, neural] = azure;
  return hd ? `${name} (HD neural)` : neural ? `${name} (neural)` : (name ?? voice);
}

/**
 * The label of a connection state. `started` says whether this attempt ever connected: a
 * failure before that is "Couldn't connect" (no call was started), after it "Call failed".
 */
export function connectionLabel(state: ConnectionState, agentName: string, started = true): Label {
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
      return started ? { text: "Call failed", tone: "bad" } : { text: "Couldn't connect", tone: "bad" };
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

function retryIn(retryAt: number | null, now: number): string {
  const seconds = retryAt === null ? 0 : Math.max(0, Math.ceil((retryAt - now) / 1000));
  return seconds > 0 ? `retrying in ${seconds} s` : "retrying now";
}

/**
 * The label of a call's memory: "queued" until the service reports the turns delivered,
 * "saved to memory" only then, "retrying" with a countdown, "failed" for refused turns.
 */
export function memoryLabel(memory: CallMemoryProgress, now: number = Date.now()): Label {
  const outstanding = memory.unsent + memory.queued;
  switch (memory.status) {
    case "off":
      return { text: "Memory is off for this call", tone: "neutral" };
    case "idle":
      return { text: "Nothing to save yet", tone: "neutral" };
    case "queued": {
      const saved = memory.saved > 0 ? `, ${memory.saved} saved` : "";
      const text = `Queued: ${plural(outstanding, "turn")} not in memory yet${saved}`;
      // The service holds them safely but cannot reach the memory store right now.
      if (memory.retryAt !== null) return { text: `${text} (memory store unreachable, ${retryIn(memory.retryAt, now)})`, tone: "warn" };
      return { text, tone: "busy" };
    }
    case "retrying":
      return { text: `Can't reach the memory service, ${retryIn(memory.retryAt, now)}: ${plural(outstanding, "turn")} kept in this browser`, tone: "warn" };
    case "saved":
      return { text: `Saved to memory (${plural(memory.saved, "turn")})`, tone: "ok" };
    case "failed":
      return { text: `Failed: ${plural(memory.failed, "turn")} couldn't be saved${memory.saved > 0 ? ` (${memory.saved} saved)` : ""}`, tone: "bad" };
  }
}

/** What the live region says when a call's memory reaches a new status (null: say nothing). */
export function memoryAnnouncement(status: CallMemoryProgress["status"]): string | null {
  switch (status) {
    case "queued":
      return "Memory: turns queued, not saved yet.";
    case "retrying":
      return "Can't reach the memory service; your turns are kept in this browser and retried.";
    case "saved":
      return "Saved to memory.";
    case "failed":
      return "Some turns couldn't be saved to memory.";
    default:
      return null;
  }
}
