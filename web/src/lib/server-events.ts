/**
 * Reading the events Azure sends on the call's data channel: parse a message, and decide
 * what it means for the client (who is speaking, an Azure error, or a transcript event for
 * the {@link TranscriptAssembler}).
 */

import type { SpeakingState } from "./call-types.js";
import type { ServerEvent, TranscriptAssembler } from "./transcript.js";

/** A data channel message as a server event, or null when it is not one (ignored). */
export function parseServerEvent(data: unknown): ServerEvent | null {
  if (typeof data !== "string") return null;
  let event: ServerEvent;
  try {
    event = JSON.parse(data) as ServerEvent;
  } catch {
    return null;
  }
  return typeof event?.type === "string" ? event : null;
}

/** What a server event changes: who speaks, a warning to show, or the transcript. */
export type ServerEventEffect =
  | { kind: "speaking"; speaking: SpeakingState }
  | { kind: "warning"; message: string }
  | { kind: "transcript" };

/** The effect of `event`, given who is speaking now (VAD and output-buffer events). */
export function effectOf(event: ServerEvent, speaking: SpeakingState): ServerEventEffect {
  switch (event.type) {
    case "input_audio_buffer.speech_started":
      return { kind: "speaking", speaking: { ...speaking, user: true } };
    case "input_audio_buffer.speech_stopped":
      return { kind: "speaking", speaking: { ...speaking, user: false } };
    case "output_audio_buffer.started":
      return { kind: "speaking", speaking: { ...speaking, assistant: true } };
    case "output_audio_buffer.stopped":
    case "output_audio_buffer.cleared":
      return { kind: "speaking", speaking: { ...speaking, assistant: false } };
    case "error": {
      const detail = (event["error"] as { message?: string } | undefined)?.message;
      return { kind: "warning", message: `Azure reported an error: ${detail ?? "unknown"}` };
    }
    default:
      return { kind: "transcript" };
  }
}
