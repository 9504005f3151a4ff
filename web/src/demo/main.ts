/**
 * The demo page: choose an agent, connect, talk, see the transcript and the memory state.
 * Built on the framework-agnostic client in `../lib`; no framework here either.
 *
 * Calls are set up through the service (`POST /realtime/calls`) for every agent; `?flow=mint`
 * selects the browser-direct flow instead (single-use key, Azure OpenAI agents only).
 *
 * The memory badge is per call and honest: "queued" until the service reports the call's
 * turns delivered to memory (`MemoryProgress`), "saved to memory" only then. Focus moves
 * to Hang up after Connect and back to Connect after the call; a polite live region
 * announces call and memory state changes; the transcript follows the newest turn.
 *
 * For automated tests the page mirrors its state in `data-*` attributes on `<body>` and
 * exposes `window.__engramVoice` (the client and a few read-only helpers).
 */

import "./style.css";

import {
  CALL_MEMORY_OFF,
  type CallMemoryProgress,
  type ConnectionState,
  type MemoryState,
  type TranscriptTurn,
  VoiceClient,
  VoiceError,
  followCallMemory,
} from "../lib";
import { TranscriptView } from "./transcript-view";
import { AGENTS, type Label, connectionLabel, memoryAnnouncement, memoryLabel, speakingLabel, upstreamLabel, voiceLabel } from "./words";

/** Where the API is: same origin by default; a static build may set VITE_ENGRAM_VOICE_API. */
const API_BASE = (import.meta.env["VITE_ENGRAM_VOICE_API"] as string | undefined) ?? "";
const AGENT_KEY = "engram-voice.demo.agent";
const CONVERSATION_KEY = "engram-voice.demo.conversation.";
const VOICE_KEY = "engram-voice.demo.voice.";
/** `?flow=mint`: the browser-direct flow; anything else: calls through the service. */
const FLOW = new URLSearchParams(location.search).get("flow") === "mint" ? "mint" : "call";

const $ = <T extends HTMLElement>(id: string): T => {
  const element = document.getElementById(id);
  if (!element) throw new Error(`#${id} is missing from index.html`);
  return element as T;
};

const ui = {
  agents: $<HTMLFieldSetElement>("agents"),
  connect: $<HTMLButtonElement>("connect"),
  hangup: $<HTMLButtonElement>("hangup"),
  mute: $<HTMLButtonElement>("mute"),
  error: $<HTMLDivElement>("error"),
  notice: $<HTMLParagraphElement>("notice"),
  connection: $<HTMLSpanElement>("connection"),
  speaking: $<HTMLSpanElement>("speaking"),
  audio: $<HTMLSpanElement>("audio"),
  voice: $<HTMLSpanElement>("voice"),
  memory: $<HTMLSpanElement>("memory"),
  announcer: $<HTMLParagraphElement>("announcer"),
};
const transcript = new TranscriptView($("transcript-region"), $<HTMLOListElement>("transcript"), $("transcript-empty"));

const client = new VoiceClient({ baseUrl: API_BASE, flow: FLOW });
document.body.dataset["flow"] = FLOW;
// Reset at each call, tracking the call's session, polling until it settles (null: no memory).
const progress = followCallMemory(client);
let agentName = "the agent";
let outboxState: MemoryState | null = client.memory?.state() ?? null;
/** Whether the current attempt ever connected ("Call failed" vs "Couldn't connect"). */
let callStarted = false;
/** Whether a call was live at the last render (focus moves only on a change). */
let wasLive = false;
let lastMemoryStatus: CallMemoryProgress["status"] = "idle";

function readLocal(key: string): string | null {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}

function writeLocal(key: string, value: string | null): void {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, value);
  } catch {
    // storage blocked: the page works without remembering choices
  }
}

function selectedAgent(): string {
  const checked = ui.agents.querySelector<HTMLInputElement>("input:checked");
  return checked?.value ?? "elena";
}

function renderAgents(): void {
  const remembered = readLocal(AGENT_KEY);
  const initial = AGENTS.some((a) => a.id === remembered) ? remembered : "elena";
  for (const agent of AGENTS) {
    const label = document.createElement("label");
    label.className = "agent";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "agent";
    input.value = agent.id;
    input.checked = agent.id === initial;
    input.addEventListener("change", () => writeLocal(AGENT_KEY, agent.id));
    const name = document.createElement("span");
    name.className = "agent-name";
    name.textContent = agent.name;
    const style = document.createElement("span");
    style.className = "agent-style";
    style.textContent = agent.style;
    const voice = document.createElement("span");
    voice.className = "agent-voice";
    voice.dataset["agent"] = agent.id;
    label.append(input, name, style, voice);
    ui.agents.append(label);
    renderAgentVoice(agent.id);
  }
}

/** Show an agent's voice: the name the service last answered with, else the catalogue's label. */
function renderAgentVoice(agentId: string): void {
  const element = ui.agents.querySelector<HTMLSpanElement>(`.agent-voice[data-agent="${agentId}"]`);
  if (!element) return;
  const known = readLocal(VOICE_KEY + agentId);
  element.textContent = `Voice: ${known ? voiceLabel(known) : (AGENTS.find((a) => a.id === agentId)?.voice ?? "—")}`;
  element.title = known ?? "";
}

function setPill(element: HTMLElement, label: Label): void {
  element.textContent = label.text;
  element.dataset["tone"] = label.tone;
}

function showError(message: string | null): void {
  ui.error.hidden = message === null;
  ui.error.textContent = message ?? "";
}

function showNotice(message: string | null): void {
  ui.notice.hidden = message === null;
  ui.notice.textContent = message ?? "";
}

/** Say `message` in the polite live region (screen readers read it when idle). */
function announce(message: string): void {
  ui.announcer.textContent = message;
}

/** The voice line when no call runs: the selected agent's voice (no stale call details). */
function renderIdleVoice(): void {
  const agent = selectedAgent();
  const known = readLocal(VOICE_KEY + agent);
  const name = AGENTS.find((a) => a.id === agent)?.name ?? agent;
  ui.voice.textContent = `${name}: ${known ? voiceLabel(known) : (AGENTS.find((a) => a.id === agent)?.voice ?? "—")}`;
  ui.voice.title = known ?? "";
}

function renderConnection(state: ConnectionState): void {
  document.body.dataset["connection"] = state;
  const label = connectionLabel(state, agentName, callStarted);
  setPill(ui.connection, label);
  const busy = state === "microphone" || state === "connecting";
  const live = busy || state === "connected" || state === "reconnecting";
  const focused = document.activeElement;
  document.body.dataset["live"] = String(live);
  ui.connect.hidden = live;
  ui.connect.disabled = live;
  ui.hangup.hidden = !live;
  ui.mute.hidden = !(state === "connected" || state === "reconnecting");
  for (const input of ui.agents.querySelectorAll("input")) input.disabled = live;
  if (!live) {
    // Nothing of the last call's audio stays on screen once it is over.
    ui.audio.textContent = "—";
    delete document.body.dataset["audioPacketsIn"];
    renderIdleVoice();
  }
  // Focus follows the button that replaced the one just used (never left on the body).
  const lost = focused === null || focused === document.body;
  if (live && !wasLive && (lost || focused === ui.connect)) ui.hangup.focus();
  if (!live && wasLive && (lost || focused === ui.hangup || focused === ui.mute)) ui.connect.focus();
  wasLive = live;
  renderSpeaking();
}

function renderSpeaking(): void {
  const connected = client.state === "connected";
  const speaking = client.speaking;
  ui.speaking.textContent = speakingLabel(speaking, agentName, connected);
  ui.speaking.dataset["who"] = !connected ? "none" : speaking.user ? "user" : speaking.assistant ? "assistant" : "none";
}

/** The memory badge: this call's memory only (it starts afresh with each call). */
function renderMemory(): void {
  const call = progress?.current() ?? CALL_MEMORY_OFF;
  const body = document.body.dataset;
  body["memory"] = call.status;
  body["memoryQueued"] = String(call.unsent + call.queued);
  body["memorySaved"] = String(call.saved);
  body["memoryFailed"] = String(call.failed);
  // The browser outbox across sessions (what this page still has to post).
  body["memoryOutbox"] = outboxState?.status ?? "off";
  body["memoryPending"] = String(outboxState?.pending ?? 0);
  const earlier = outboxState?.pending ?? 0;
  if (call.sessionId === null && call.status === "idle" && earlier > 0) {
    // No call yet on this page, but turns an earlier page could not post are on their way.
    const retrying = outboxState?.status === "retrying";
    const text = `${earlier} turn${earlier === 1 ? "" : "s"} of an earlier call ${retrying ? "kept here, retrying" : "being sent"}`;
    setPill(ui.memory, { text, tone: retrying ? "warn" : "busy" });
  } else {
    setPill(ui.memory, memoryLabel(call));
  }
  ui.memory.title = call.status === "retrying" ? (outboxState?.lastError ?? "The memory store is unreachable") : "";
  if (call.status !== lastMemoryStatus) {
    lastMemoryStatus = call.status;
    const words = memoryAnnouncement(call.status);
    if (words) announce(words);
  }
}

function renderTranscript(turns: TranscriptTurn[]): void {
  transcript.render(turns, agentName);
}

let statsTimer: ReturnType<typeof setInterval> | null = null;

function watchAudio(on: boolean): void {
  if (statsTimer !== null) clearInterval(statsTimer);
  statsTimer = null;
  if (!on) return;
  const tick = async (): Promise<void> => {
    const stats = await client.audioStats();
    if (!stats || statsTimer === null) return; // the call ended while the stats were read
    const receiving = stats.inboundPackets > 0;
    ui.audio.textContent = receiving
      ? `Receiving (${stats.inboundPackets.toLocaleString()} packets in, ${stats.outboundPackets.toLocaleString()} out)`
      : "Waiting for audio…";
    document.body.dataset["audioPacketsIn"] = String(stats.inboundPackets);
  };
  void tick();
  statsTimer = setInterval(() => void tick(), 1000);
}

async function connect(): Promise<void> {
  const agent = selectedAgent();
  agentName = AGENTS.find((a) => a.id === agent)?.name ?? agent;
  showError(null);
  showNotice(null);
  ui.audio.textContent = "—";
  const conversationId = readLocal(CONVERSATION_KEY + agent) ?? undefined;
  try {
    await client.connect(conversationId ? { agent, conversationId } : { agent });
  } catch (error) {
    if (error instanceof VoiceError && error.kind === "forbidden" && conversationId) {
      // The remembered conversation is not ours any more (new keys, other user): start afresh.
      writeLocal(CONVERSATION_KEY + agent, null);
      await connect();
    }
    // Every error is already shown by the "error" listener.
  }
}

client.on("connection", ({ state, call, reason }) => {
  if (state === "microphone") {
    // A new call: its transcript starts afresh (its memory too: `progress` follows the client).
    callStarted = false;
    transcript.follow();
  }
  if (state === "connected") callStarted = true;
  if (call) {
    agentName = call.agent.name;
    writeLocal(CONVERSATION_KEY + call.agent.id, call.conversationId);
    writeLocal(VOICE_KEY + call.agent.id, call.agent.voice);
    renderAgentVoice(call.agent.id);
    ui.voice.textContent = `${voiceLabel(call.agent.voice)}, on ${upstreamLabel(call.upstream)}`;
    ui.voice.title = call.agent.voice; // the exact voice name, for the curious
    document.body.dataset["sessionId"] = call.sessionId;
    document.body.dataset["voice"] = call.agent.voice;
    document.body.dataset["upstream"] = call.upstream;
    if (call.callId) document.body.dataset["callId"] = call.callId;
    else delete document.body.dataset["callId"];
  }
  if (state === "ended" && reason) document.body.dataset["endReason"] = reason;
  else delete document.body.dataset["endReason"];
  watchAudio(state === "connected" || state === "reconnecting");
  renderConnection(state);
  if (state === "connected") ui.audio.textContent = "Waiting for audio…";
  const said = connectionLabel(state, agentName, callStarted).text;
  announce(/[.…]$/.test(said) ? said : `${said}.`);
});
client.on("error", (error) => showError(error.message));
client.on("warning", (message) => showNotice(message));
client.on("speaking", () => renderSpeaking());
client.on("transcript", (turns) => renderTranscript(turns));
client.on("muted", (muted) => {
  ui.mute.setAttribute("aria-pressed", String(muted));
  ui.mute.textContent = muted ? "Unmute microphone" : "Mute microphone";
});
client.on("memory", (state) => {
  outboxState = state;
  renderMemory();
});
progress?.on("progress", () => renderMemory());
// The retry countdown moves even when nothing else changes.
setInterval(() => {
  if (progress?.current().retryAt != null) renderMemory();
}, 1000);

ui.connect.addEventListener("click", () => void connect());
ui.hangup.addEventListener("click", () => void client.hangUp());
ui.mute.addEventListener("click", () => client.setMuted(!client.muted));

renderAgents();
ui.agents.addEventListener("change", () => {
  if (document.body.dataset["live"] !== "true") renderIdleVoice();
});
renderConnection(client.state);
renderMemory();

declare global {
  interface Window {
    /** Read-only hooks for automated browser tests and curious developers. */
    __engramVoice?: {
      client: VoiceClient;
      audioStats: () => ReturnType<VoiceClient["audioStats"]>;
      memory: () => MemoryState | null;
      /** The current call's memory, as the badge shows it. */
      progress: () => CallMemoryProgress | null;
      transcript: () => TranscriptTurn[];
    };
  }
}

window.__engramVoice = {
  client,
  audioStats: () => client.audioStats(),
  memory: () => client.memory?.state() ?? null,
  progress: () => progress?.current() ?? null,
  transcript: () => client.transcript(),
};
