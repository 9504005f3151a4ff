import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { GA_EVENT_NAMES, type ServerEvent, TranscriptAssembler, normaliseEvent } from "../src/lib/transcript";
import type { TranscriptTurn } from "../src/lib/types";

/** GA name → Voice Live name (the inverse of the library's table). */
const VOICE_LIVE_NAMES = new Map([...GA_EVENT_NAMES].map(([voiceLive, ga]) => [ga, voiceLive]));

/** The same event as Voice Live sends it on `voice-live-events`. */
const asVoiceLive = (event: ServerEvent): ServerEvent => ({ ...event, type: VOICE_LIVE_NAMES.get(event.type) ?? event.type });

/** A two-exchange conversation in GA names, in the order Azure typically sends it. */
function conversation(): ServerEvent[] {
  return [
    { type: "input_audio_buffer.speech_started", item_id: "item_u1" },
    { type: "conversation.item.added", previous_item_id: null, item: { id: "item_u1", type: "message", role: "user" } },
    { type: "conversation.item.added", previous_item_id: "item_u1", item: { id: "item_a1", type: "message", role: "assistant" } },
    { type: "response.output_audio_transcript.delta", item_id: "item_a1", delta: "Hi, I'm " },
    { type: "response.output_audio_transcript.delta", item_id: "item_a1", delta: "Elena." },
    { type: "response.output_audio_transcript.done", item_id: "item_a1", transcript: "Hi, I'm Elena." },
    { type: "conversation.item.input_audio_transcription.delta", item_id: "item_u1", delta: "Hel" },
    { type: "conversation.item.input_audio_transcription.completed", item_id: "item_u1", transcript: "Hello?" },
    { type: "conversation.item.added", previous_item_id: "item_a1", item: { id: "item_f1", type: "function_call" } },
    { type: "conversation.item.added", previous_item_id: "item_f1", item: { id: "item_u2", type: "message", role: "user" } },
    { type: "conversation.item.added", previous_item_id: "item_u2", item: { id: "item_a2", type: "message", role: "assistant" } },
    { type: "response.output_text.delta", item_id: "item_a2", delta: "Sure" },
    { type: "response.output_text.done", item_id: "item_a2", text: "Sure, tell me more." },
    { type: "conversation.item.input_audio_transcription.completed", item_id: "item_u2", transcript: "Can we talk?" },
  ];
}

/** A deterministic pseudo-random permutation (mulberry32), so every run checks the same orders. */
function shuffled<T>(items: T[], seed: number): T[] {
  let state = seed >>> 0;
  const random = (): number => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i -= 1) {
    const j = Math.floor(random() * (i + 1));
    [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
  }
  return copy;
}

interface Outcome {
  turns: TranscriptTurn[];
  commits: TranscriptTurn[];
  handled: boolean[];
}

function run(events: ServerEvent[]): Outcome {
  const assembler = new TranscriptAssembler({ holdMs: 8000 });
  const commits: TranscriptTurn[] = [];
  assembler.on("commit", (turn) => commits.push(turn));
  const handled = events.map((event) => assembler.handle(event));
  assembler.flush();
  return { turns: assembler.turns(), commits, handled };
}

describe("transcripts from either event vocabulary", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2026-05-01T10:00:00Z"));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("renames only Voice Live's own event names and keeps every field", () => {
    const event = { type: "response.audio_transcript.done", item_id: "item_a1", transcript: "Hi", response_id: "resp_1" };
    expect(normaliseEvent(event)).toEqual({ ...event, type: "response.output_audio_transcript.done" });
    for (const same of ["conversation.item.input_audio_transcription.completed", "response.output_audio_transcript.done", "constructor", "toString"]) {
      const untouched = { type: same, item_id: "x" };
      expect(normaliseEvent(untouched)).toBe(untouched);
    }
  });

  it("assembles the same turns and memory commits from Voice Live's names as from the GA names", () => {
    const ga = run(conversation());
    const voiceLive = run(conversation().map(asVoiceLive));
    expect(ga.turns.map((t) => [t.id, t.role, t.text, t.final])).toEqual([
      ["item_u1", "user", "Hello?", true],
      ["item_a1", "assistant", "Hi, I'm Elena.", true],
      ["item_u2", "user", "Can we talk?", true],
      ["item_a2", "assistant", "Sure, tell me more.", true],
    ]);
    expect(voiceLive).toEqual(ga);
  });

  it.each(Array.from({ length: 40 }, (_, seed) => seed))(
    "gives identical turns for both vocabularies whatever order the events arrive in (order %i)",
    (seed) => {
      const events = shuffled(conversation(), seed);
      const ga = run(events);
      const voiceLive = run(events.map(asVoiceLive));
      expect(voiceLive).toEqual(ga);
      expect(new Set(ga.commits.map((t) => t.id))).toEqual(new Set(["item_u1", "item_a1", "item_u2", "item_a2"]));
    },
  );

  it("streams Voice Live's assistant deltas as a partial turn before the done transcript", () => {
    const assembler = new TranscriptAssembler();
    assembler.handle({ type: "conversation.item.created", previous_item_id: null, item: { id: "item_a1", type: "message", role: "assistant" } });
    assembler.handle({ type: "response.audio_transcript.delta", item_id: "item_a1", delta: "Hel" });
    expect(assembler.turns()).toEqual([{ id: "item_a1", role: "assistant", text: "Hel", final: false }]);
    assembler.handle({ type: "response.audio_transcript.done", item_id: "item_a1", transcript: "Hello." });
    expect(assembler.turns()).toMatchObject([{ id: "item_a1", text: "Hello.", final: true }]);
  });
});
