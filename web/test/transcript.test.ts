import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { TranscriptAssembler, type ServerEvent } from "../src/lib/transcript";
import type { Role, TranscriptTurn } from "../src/lib/types";

const added = (id: string, role: string, previous: string | null, type = "message"): ServerEvent => ({
  type: "conversation.item.added",
  previous_item_id: previous,
  item: { id, type, role },
});
const userDone = (id: string, transcript: string): ServerEvent => ({
  type: "conversation.item.input_audio_transcription.completed",
  item_id: id,
  transcript,
});
const assistantDelta = (id: string, delta: string): ServerEvent => ({
  type: "response.output_audio_transcript.delta",
  item_id: id,
  delta,
});
const assistantDone = (id: string, transcript: string): ServerEvent => ({
  type: "response.output_audio_transcript.done",
  item_id: id,
  transcript,
});

function assemble(holdMs = 8000): { assembler: TranscriptAssembler; commits: TranscriptTurn[] } {
  const assembler = new TranscriptAssembler({ holdMs });
  const commits: TranscriptTurn[] = [];
  assembler.on("commit", (turn) => commits.push(turn));
  return { assembler, commits };
}

const texts = (turns: TranscriptTurn[]): string[] => turns.map((t) => `${t.role}:${t.text}`);

describe("TranscriptAssembler", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(new Date("2026-05-01T10:00:00Z"));
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("orders turns by previous_item_id even when the user transcript arrives last", () => {
    const { assembler } = assemble();
    assembler.handle(added("item_u1", "user", null));
    assembler.handle(added("item_a1", "assistant", "item_u1"));
    assembler.handle(assistantDone("item_a1", "Hello, I'm Elena."));
    assembler.handle(userDone("item_u1", "Hi there"));

    expect(texts(assembler.turns())).toEqual(["user:Hi there", "assistant:Hello, I'm Elena."]);
    expect(assembler.turns().map((t) => t.id)).toEqual(["item_u1", "item_a1"]);
  });

  it("commits a final turn only after the earlier turn is transcribed, in conversation order", () => {
    const { assembler, commits } = assemble();
    assembler.handle(added("item_u1", "user", null));
    assembler.handle(added("item_a1", "assistant", "item_u1"));
    assembler.handle(assistantDone("item_a1", "Answer"));
    expect(commits).toEqual([]);

    assembler.handle(userDone("item_u1", "Question"));
    expect(texts(commits)).toEqual(["user:Question", "assistant:Answer"]);
    expect(commits.every((t) => t.final && t.at === "2026-05-01T10:00:00.000Z")).toBe(true);
  });

  it("stops waiting for a transcript after holdMs and commits the late turn when it comes", () => {
    const { assembler, commits } = assemble(5000);
    assembler.handle(added("item_u1", "user", null));
    assembler.handle(added("item_a1", "assistant", "item_u1"));
    assembler.handle(assistantDone("item_a1", "Answer"));

    vi.advanceTimersByTime(4999);
    expect(commits).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(texts(commits)).toEqual(["assistant:Answer"]);

    assembler.handle(userDone("item_u1", "Late question"));
    expect(texts(commits)).toEqual(["assistant:Answer", "user:Late question"]);
  });

  it("does not wait for, or commit, a turn whose transcription failed", () => {
    const { assembler, commits } = assemble();
    assembler.handle(added("item_u1", "user", null));
    assembler.handle(added("item_a1", "assistant", "item_u1"));
    assembler.handle(assistantDone("item_a1", "Answer"));
    assembler.handle({ type: "conversation.item.input_audio_transcription.failed", item_id: "item_u1" });

    expect(texts(commits)).toEqual(["assistant:Answer"]);
    expect(assembler.turns()[0]).toMatchObject({ id: "item_u1", failed: true, final: true });
  });

  it("streams assistant deltas as a partial turn and keeps the done transcript", () => {
    const { assembler, commits } = assemble();
    const seen: TranscriptTurn[] = [];
    assembler.on("turn", (turn) => seen.push(turn));
    assembler.handle(added("item_a1", "assistant", null));
    assembler.handle(assistantDelta("item_a1", "Hel"));
    assembler.handle(assistantDelta("item_a1", "lo"));
    expect(assembler.turns()).toEqual([{ id: "item_a1", role: "assistant", text: "Hello", final: false }]);

    assembler.handle(assistantDone("item_a1", " Hello there. "));
    assembler.handle(assistantDelta("item_a1", "stray"));
    expect(assembler.turns()[0]?.text).toBe("Hello there.");
    expect(texts(commits)).toEqual(["assistant:Hello there."]);
    expect(seen.map((t) => t.text)).toEqual(["", "Hel", "Hello", "Hello there."]);
  });

  it("places items with an unknown previous item last and moves a placeholder once its item is added", () => {
    const { assembler } = assemble();
    assembler.handle(userDone("item_u2", "second"));
    assembler.handle(added("item_u1", "user", "item_elsewhere"));
    assembler.handle(userDone("item_u1", "first?"));
    assembler.handle(added("item_u2", "user", "item_u1"));
    expect(assembler.turns().map((t) => t.id)).toEqual(["item_u1", "item_u2"]);

    assembler.handle(added("item_u0", "user", null));
    expect(assembler.turns().map((t) => t.id)).toEqual(["item_u0", "item_u1", "item_u2"]);
  });

  it("never waits for items that carry no transcript and never commits empty text", () => {
    const { assembler, commits } = assemble();
    assembler.handle(added("item_f1", "", null, "function_call"));
    assembler.handle(added("item_u1", "user", "item_f1"));
    assembler.handle(userDone("item_u1", "   "));
    assembler.handle(added("item_a1", "assistant", "item_u1"));
    assembler.handle(assistantDone("item_a1", "Still here"));

    expect(texts(commits)).toEqual(["assistant:Still here"]);
    expect(assembler.turns().map((t) => t.id)).toEqual(["item_u1", "item_a1"]);
  });

  it("commits each turn once, even when its final event repeats", () => {
    const { assembler, commits } = assemble();
    assembler.handle(added("item_u1", "user", null));
    assembler.handle(userDone("item_u1", "Once"));
    assembler.handle(userDone("item_u1", "Once"));
    assembler.flush();
    expect(texts(commits)).toEqual(["user:Once"]);
  });

  it("flush commits every final turn at once without waiting for earlier ones", () => {
    const { assembler, commits } = assemble();
    assembler.handle(added("item_u1", "user", null));
    assembler.handle(added("item_a1", "assistant", "item_u1"));
    assembler.handle(assistantDone("item_a1", "Bye"));
    assembler.flush();
    expect(texts(commits)).toEqual(["assistant:Bye"]);
  });

  const userDelta = (id: string, delta: string): ServerEvent => ({
    type: "conversation.item.input_audio_transcription.delta",
    item_id: id,
    delta,
  });
  const responseDone = (status: string, ...ids: string[]): ServerEvent => ({
    type: "response.done",
    response: { status, output: ids.map((id) => ({ id })) },
  });
  const voiceLive = (event: ServerEvent): ServerEvent =>
    event.type === "response.output_audio_transcript.delta" ? { ...event, type: "response.audio_transcript.delta" } : event;

  // Every way a turn in progress can be cut off, for both roles where it applies.
  const cuts: [string, Role, (assembler: TranscriptAssembler, id: string) => void][] = [
    ["the call ends during the answer", "assistant", (assembler) => assembler.end()],
    ["the call ends during the user's transcription", "user", (assembler) => assembler.end()],
    ["the response is cancelled (barge-in)", "assistant", (assembler, id) => assembler.handle(responseDone("cancelled", id))],
    ["the response ends incomplete", "assistant", (assembler, id) => assembler.handle(responseDone("incomplete", "item_other", id))],
    ["the response fails", "assistant", (assembler, id) => assembler.handle(responseDone("failed", id))],
  ];

  it.each(cuts)("marks a turn interrupted when %s: text kept, not final, never committed, later turns released", (_, role, cut) => {
    const { assembler, commits } = assemble();
    const seen: TranscriptTurn[] = [];
    assembler.on("turn", (turn) => seen.push(turn));
    assembler.handle(added("item_x", role, null));
    assembler.handle(role === "user" ? userDelta("item_x", "Half a sen") : voiceLive(assistantDelta("item_x", "Half a sen")));
    assembler.handle(added("item_u2", "user", "item_x"));
    assembler.handle(userDone("item_u2", "Next"));
    expect(commits).toEqual([]); // held behind the turn in progress
    cut(assembler, "item_x");

    expect(assembler.turns()[0]).toEqual({ id: "item_x", role, text: "Half a sen", final: false, interrupted: true });
    expect(seen.filter((turn) => turn.interrupted).map((turn) => turn.id)).toEqual(["item_x"]);
    expect(texts(commits)).toEqual(["user:Next"]); // committed at once, not after holdMs
    assembler.handle(role === "user" ? userDone("item_x", "Half a sentence") : assistantDone("item_x", "Half a sentence"));
    assembler.end();
    expect(assembler.turns()[0]).toMatchObject({ text: "Half a sen", interrupted: true });
    expect(texts(commits)).toEqual(["user:Next"]);
  });

  it.each(["completed", "in_progress", ""])("leaves turns alone when a response ends %j, and end() never touches final turns", (status) => {
    const { assembler, commits } = assemble();
    assembler.handle(added("item_a1", "assistant", null));
    assembler.handle(assistantDone("item_a1", "Done"));
    assembler.handle(added("item_a2", "assistant", "item_a1"));
    assembler.handle(assistantDelta("item_a2", "Still"));
    assembler.handle(responseDone(status, "item_a1", "item_a2"));
    expect(assembler.turns().map((t) => t.interrupted ?? false)).toEqual([false, false]);

    assembler.end();
    expect(assembler.turns()).toEqual([
      { id: "item_a1", role: "assistant", text: "Done", final: true, at: "2026-05-01T10:00:00.000Z" },
      { id: "item_a2", role: "assistant", text: "Still", final: false, interrupted: true },
    ]);
    expect(texts(commits)).toEqual(["assistant:Done"]);
  });

  it("end() leaves failed turns and items that carry no transcript as they are", () => {
    const { assembler } = assemble();
    assembler.handle(added("item_f1", "", null, "function_call"));
    assembler.handle(added("item_u1", "user", "item_f1"));
    assembler.handle({ type: "conversation.item.input_audio_transcription.failed", item_id: "item_u1" });
    assembler.end();
    expect(assembler.turns()).toEqual([{ id: "item_u1", role: "user", text: "", final: true, failed: true }]);
  });

  it("ignores events that are not about the transcript", () => {
    const { assembler } = assemble();
    expect(assembler.handle({ type: "input_audio_buffer.speech_started" })).toBe(false);
    expect(assembler.handle({ type: "session.created" })).toBe(false);
    expect(assembler.turns()).toEqual([]);
  });
});
