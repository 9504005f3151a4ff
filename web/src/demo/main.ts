/**
 * The demo page: choose an agent, connect, talk, see the transcript and the memory state.
 * Built on the framework-agnostic client in `../lib`; no framework here either.
 *
 * Calls are set up through the service (`POST /realtime/calls`) for every agent; `?flow=mint`
 * selects the browser-direct flow instead (single-use key, Azure OpenAI agents only).
 *
 * For automated tests the page mirrors its state in `data-*` attributes on `<body>` and
 * exposes `window.__engramVoice` (the client and a few read-only helpers).
 */

import "./style.css";

import { type ConnectionState, type MemoryState, type TranscriptTurn, VoiceClient, VoiceError } from "../lib";
import { AGENTS, type Label, connectionLabel, memoryLabel, speakingLabel, upstreamLabel, voiceLabel } from "./words";

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
  transcript: $<HTMLOListElement>("transcript"),
  empty: $<HTMLParagraphElement>("transcript-empty"),
};

const client = new VoiceClient({ baseUrl: API_BASE, flow: FLOW });
document.body.dataset["flow"] = FLOW;
let agentName = "the agent";
let memoryState: MemoryState | null = client.memory?.state() ?? null;
/** False while a call runs without a memory grant from the service. */
let memoryGranted = true;

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

function renderConnection(state: ConnectionState): void {
  document.body.dataset["connection"] = state;
  setPill(ui.connection, connectionLabel(state, agentName));
  const busy = state === "microphone" || state === "connecting";
  const live = busy || state === "connected" || state === "reconnecting";
  ui.connect.hidden = live;
  ui.connect.disabled = live;
  ui.hangup.hidden = !live;
  ui.mute.hidden = !(state === "connected" || state === "reconnecting");
  for (const input of ui.agents.querySelectorAll("input")) input.disabled = live;
  renderSpeaking();
}

function renderSpeaking(): void {
  const connected = client.state === "connected";
  const speaking = client.speaking;
  ui.speaking.textContent = speakingLabel(speaking, agentName, connected);
  ui.speaking.dataset["who"] = !connected ? "none" : speaking.user ? "user" : speaking.assistant ? "assistant" : "none";
}

function renderMemory(): void {
  const idle = !memoryState || (memoryState.status === "idle" && memoryState.pending === 0);
  if (!memoryState || (!memoryGranted && idle)) {
    setPill(ui.memory, { text: "Memory is off for this call", tone: "neutral" });
    document.body.dataset["memory"] = "off";
    return;
  }
  document.body.dataset["memory"] = memoryState.status;
  document.body.dataset["memoryPending"] = String(memoryState.pending);
  document.body.dataset["memorySaved"] = String(memoryState.saved);
  const label = memoryLabel(memoryState);
  setPill(ui.memory, label);
  ui.memory.title = memoryState.lastError ?? "";
}

function renderTranscript(turns: TranscriptTurn[]): void {
  const visible = turns.filter((turn) => !turn.failed && (turn.text || !turn.final));
  ui.empty.hidden = visible.length > 0;
  const existing = new Map<string, HTMLLIElement>();
  for (const li of ui.transcript.querySelectorAll<HTMLLIElement>("li[data-item-id]")) {
    existing.set(li.dataset["itemId"] ?? "", li);
  }
  const keep = new Set<string>();
  let previous: HTMLLIElement | null = null;
  for (const turn of visible) {
    keep.add(turn.id);
    let li = existing.get(turn.id);
    if (!li) {
      li = document.createElement("li");
      li.className = "turn";
      li.dataset["itemId"] = turn.id;
      const who = document.createElement("span");
      who.className = "turn-who";
      const text = document.createElement("p");
      text.className = "turn-text";
      li.append(who, text);
    }
    li.dataset["role"] = turn.role;
    li.dataset["final"] = String(turn.final);
    (li.firstElementChild as HTMLElement).textContent = turn.role === "user" ? "You" : agentName;
    (li.lastElementChild as HTMLElement).textContent = turn.text || "…";
    const expectedPosition: ChildNode | null = previous ? previous.nextSibling : ui.transcript.firstChild;
    if (expectedPosition !== li) ui.transcript.insertBefore(li, expectedPosition);
    previous = li;
  }
  for (const [id, li] of existing) if (!keep.has(id)) li.remove();
}

let statsTimer: ReturnType<typeof setInterval> | null = null;

function watchAudio(on: boolean): void {
  if (statsTimer !== null) clearInterval(statsTimer);
  statsTimer = null;
  if (!on) return;
  const tick = async (): Promise<void> => {
    const stats = await client.audioStats();
    if (!stats) return;
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
  if (call) {
    agentName = call.agent.name;
    memoryGranted = call.memory;
    renderMemory();
    writeLocal(CONVERSATION_KEY + call.agent.id, call.conversationId);
    writeLocal(VOICE_KEY + call.agent.id, call.agent.voice);
    renderAgentVoice(call.agent.id);
    ui.voice.textContent = `${voiceLabel(call.agent.voice)} — ${call.agent.voice}, on ${upstreamLabel(call.upstream)}`;
    document.body.dataset["sessionId"] = call.sessionId;
    document.body.dataset["voice"] = call.agent.voice;
    document.body.dataset["upstream"] = call.upstream;
    if (call.callId) document.body.dataset["callId"] = call.callId;
    else delete document.body.dataset["callId"];
  }
  if (state === "ended" && reason) document.body.dataset["endReason"] = reason;
  else delete document.body.dataset["endReason"];
  renderConnection(state);
  watchAudio(state === "connected" || state === "reconnecting");
  if (state === "connected") ui.audio.textContent = "Waiting for audio…";
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
  memoryState = state;
  renderMemory();
});
// The retry countdown moves even when nothing else changes.
setInterval(() => {
  if (memoryState?.status === "retrying") renderMemory();
}, 1000);

ui.connect.addEventListener("click", () => void connect());
ui.hangup.addEventListener("click", () => void client.hangUp());
ui.mute.addEventListener("click", () => client.setMuted(!client.muted));

renderAgents();
renderConnection(client.state);
renderMemory();

declare global {
  interface Window {
    /** Read-only hooks for automated browser tests and curious developers. */
    __engramVoice?: {
      client: VoiceClient;
      audioStats: () => ReturnType<VoiceClient["audioStats"]>;
      memory: () => MemoryState | null;
      transcript: () => TranscriptTurn[];
    };
  }
}

window.__engramVoice = {
  client,
  audioStats: () => client.audioStats(),
  memory: () => client.memory?.state() ?? null,
  transcript: () => client.transcript(),
};
