/** Errors of a voice session, classified so a UI can explain them in plain words. */

import type { Problem } from "./types.js";

/**
 * What went wrong, from the user's point of view:
 * - `unsupported`: the browser (or an insecure page) cannot do WebRTC or capture audio.
 * - `microphone_denied` / `microphone_missing` / `microphone_busy`: getUserMedia failed.
 * - `unauthenticated` / `forbidden`: the service refused the caller (sign in again).
 * - `mint_refused`: the service refused the request itself (bad agent, bad conversation).
 * - `rate_limited`: too many calls started; `retryAfterSeconds` says when to retry.
 * - `too_many_calls`: this user already has as many calls open as the service allows
 *   (another tab or device); `retryAfterSeconds` when the service said.
 * - `service_unavailable`: the service answered but cannot start a call now (Azure failing,
 *   refusing or too slow behind it).
 * - `service_unreachable`: the service did not answer (network, server down, timeout).
 * - `azure_unreachable`: the media connection (or, browser-direct, the SDP offer) could not
 *   reach Azure.
 * - `azure_refused`: browser-direct only: Azure answered the SDP offer with an error (e.g.
 *   the key was used).
 * - `connection_lost`: the audio connection dropped during the call.
 */
export type VoiceErrorKind =
  | "unsupported"
  | "microphone_denied"
  | "microphone_missing"
  | "microphone_busy"
  | "unauthenticated"
  | "forbidden"
  | "mint_refused"
  | "rate_limited"
  | "too_many_calls"
  | "service_unavailable"
  | "service_unreachable"
  | "azure_unreachable"
  | "azure_refused"
  | "connection_lost";

/** Options of {@link VoiceError}. */
export interface VoiceErrorInit {
  /** HTTP status of the answer that caused the error, if any. */
  status?: number;
  /** Machine-readable code from the service's problem+json or Azure's error body. */
  code?: string;
  /** Seconds to wait before retrying (from `Retry-After`). */
  retryAfterSeconds?: number;
  /** The service's problem document, when there was one. */
  problem?: Problem;
  cause?: unknown;
}

/** An error of a voice session with a {@link VoiceErrorKind} and a plain-words message. */
export class VoiceError extends Error {
  override readonly name = "VoiceError";
  readonly kind: VoiceErrorKind;
  readonly status: number | undefined;
  readonly code: string | undefined;
  readonly retryAfterSeconds: number | undefined;
  readonly problem: Problem | undefined;

  /** Create an error whose message is the plain-words sentence for `kind`. */
  constructor(kind: VoiceErrorKind, init: VoiceErrorInit = {}) {
    super(plainWords(kind, init), init.cause === undefined ? undefined : { cause: init.cause });
    this.kind = kind;
    this.status = init.status;
    this.code = init.code;
    this.retryAfterSeconds = init.retryAfterSeconds;
    this.problem = init.problem;
  }
}

/** A sentence a person can act on, for each kind of error. */
export function describeError(error: VoiceError): string {
  return plainWords(error.kind, error);
}

function plainWords(kind: VoiceErrorKind, error: Pick<VoiceErrorInit, "problem" | "retryAfterSeconds" | "status">): string {
  switch (kind) {
    case "unsupported":
      return "This browser can't make voice calls here. Use a recent Chrome, Edge, Firefox or Safari, on an https:// (or localhost) page.";
    case "microphone_denied":
      return "Microphone access is blocked. Allow the microphone for this site (the icon in the address bar), then connect again.";
    case "microphone_missing":
      return "No microphone was found. Plug one in or check your sound settings, then connect again.";
    case "microphone_busy":
      return "Your microphone can't be started; another app may be using it. Close it and connect again.";
    case "unauthenticated":
      return "You're signed out. Sign in again, then connect.";
    case "forbidden":
      return error.problem?.detail
        ? `The voice service refused this: ${error.problem.detail}`
        : "You're not allowed to start this conversation.";
    case "mint_refused":
      return error.problem?.detail
        ? `The voice service refused to start a session: ${error.problem.detail}`
        : "The voice service refused to start a session.";
    case "rate_limited":
      return error.retryAfterSeconds
        ? `Too many calls started in a short time. Try again in ${error.retryAfterSeconds} s.`
        : "Too many calls started in a short time. Try again in a minute.";
    case "too_many_calls":
      return "You already have as many calls open as allowed (in another tab or on another device). Hang one up, then connect again.";
    case "service_unavailable":
      return "The voice service can't reach Azure right now, so no call can start. Try again in a moment.";
    case "service_unreachable":
      return "Can't reach the voice service. Check your connection and try again.";
    case "azure_unreachable":
      return error.status
        ? "Azure couldn't start the audio right now. Try again in a moment."
        : "Couldn't reach Azure for the audio. Check your network (a firewall or VPN may block it) and try again.";
    case "azure_refused":
      return "Azure OpenAI refused the audio connection. Connect again to get a fresh key.";
    case "connection_lost":
      return "The audio connection dropped. Connect again to continue.";
  }
}

/** Turn a failed `getUserMedia` call into a {@link VoiceError}. */
export function microphoneError(cause: unknown): VoiceError {
  const name = cause instanceof Error || isDomException(cause) ? cause.name : "";
  let kind: VoiceErrorKind = "microphone_busy";
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    kind = "microphone_denied";
  } else if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    kind = "microphone_missing";
  }
  return new VoiceError(kind, { cause, code: name || undefined });
}

function isDomException(value: unknown): value is { name: string } {
  return typeof value === "object" && value !== null && typeof (value as { name?: unknown }).name === "string";
}
