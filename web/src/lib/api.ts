/**
 * The service's realtime endpoints:
 * - `POST /realtime/calls` / `DELETE /realtime/calls/{call_id}`: the service sets up and
 *   ends a call for any agent (Voice Live or Azure OpenAI); the browser never holds an Azure
 *   credential. The default flow.
 * - `POST /realtime/sessions`: a single-use Azure OpenAI key for a browser that posts its
 *   offer to Azure itself (browser-direct flow).
 */

import { VoiceError } from "./errors.js";
import { type FetchLike, TimeoutError, fetchWithTimeout, globalFetch, joinUrl, readProblem, retryAfterMs } from "./http.js";
import type { CallCreated, CreateCallRequest, CreateSessionRequest, SessionCreated } from "./types.js";

/** Where the service is and how to authenticate to it. */
export interface ServiceOptions {
  /** Base URL of engram-voice; empty (the default) means this page's origin. */
  baseUrl?: string;
  /**
   * Returns a bearer token for the service (production modes), or null/undefined when the
   * service needs none (local mode, or cookie-based auth in front of it).
   */
  getAuthToken?: () => Promise<string | null | undefined> | string | null | undefined;
  /** `fetch` to use; the global one by default. */
  fetch?: FetchLike;
  /** Bound on the mint request, in milliseconds (default 15000). */
  timeoutMs?: number;
  /**
   * Bound on `POST /realtime/calls`, in milliseconds (default 30000). Longer than the
   * service's own bounds (by default Voice Live: connect 3 s + answer 10 s; Azure OpenAI:
   * mint deadline 15 s + SDP post 10 s), so its clearer 504 arrives first.
   */
  callTimeoutMs?: number;
  /** Bound on `DELETE /realtime/calls/{call_id}`, in milliseconds (default 3000). */
  hangupTimeoutMs?: number;
}

/** The headers of a JSON request to the service, with the caller's bearer token if any. */
function jsonHeaders(token: string | null | undefined): Record<string, string> {
  const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "application/json" };
  if (token) headers["Authorization"] = `Bearer ${token}`;
  return headers;
}

/** POST `body` as JSON to `path`; a transport failure or timeout is `service_unreachable`. */
async function postJson(path: string, body: unknown, options: ServiceOptions, timeoutMs: number): Promise<Response> {
  const headers = jsonHeaders(await options.getAuthToken?.());
  const url = joinUrl(options.baseUrl ?? "", path);
  try {
    return await fetchWithTimeout(
      options.fetch ?? globalFetch,
      url,
      { method: "POST", headers, body: JSON.stringify(body), cache: "no-store" },
      timeoutMs,
    );
  } catch (cause) {
    throw new VoiceError("service_unreachable", { cause, code: cause instanceof TimeoutError ? "timeout" : "network" });
  }
}

/** The {@link VoiceError} for a failed answer of the service (problem+json). */
async function serviceError(response: Response): Promise<VoiceError> {
  const problem = await readProblem(response);
  const init = { status: response.status, code: problem?.code, problem };
  const status = response.status;
  if (status === 401) return new VoiceError("unauthenticated", init);
  if (status === 403) return new VoiceError("forbidden", init);
  if (status === 429) {
    const wait = retryAfterMs(response.headers.get("Retry-After"));
    const retryAfterSeconds = wait === undefined ? undefined : Math.ceil(wait / 1000);
    return new VoiceError(problem?.code === "too_many_calls" ? "too_many_calls" : "rate_limited", { ...init, retryAfterSeconds });
  }
  if (status >= 500) return new VoiceError("service_unavailable", init);
  return new VoiceError("mint_refused", init);
}

/**
 * Mint a realtime session for `request.agent` (browser-direct flow, Azure OpenAI agents
 * only). Call it right before posting the SDP offer: the key inside is single-use and
 * expires within a minute.
 *
 * @throws {VoiceError} `unauthenticated`, `forbidden`, `mint_refused`, `rate_limited`,
 *   `service_unavailable` or `service_unreachable`.
 */
export async function mintSession(request: CreateSessionRequest, options: ServiceOptions = {}): Promise<SessionCreated> {
  const response = await postJson("/realtime/sessions", request, options, options.timeoutMs ?? 15_000);
  if (!response.ok) throw await serviceError(response);
  const body = (await response.json()) as SessionCreated;
  if (typeof body?.client_secret?.value !== "string" || typeof body.webrtc_url !== "string") {
    throw new VoiceError("service_unavailable", { status: response.status, code: "bad_answer" });
  }
  return body;
}

/**
 * Set up a call through the service: post the complete SDP offer for `request.agent` and
 * get the SDP answer, the call's ids, the agent's voice, the upstream and the memory grant
 * in one round trip.
 *
 * @throws {VoiceError} `unauthenticated`, `forbidden`, `mint_refused` (unknown agent, bad
 *   offer), `rate_limited`, `too_many_calls`, `service_unavailable` (Azure failed, refused
 *   or timed out behind the service) or `service_unreachable`.
 */
export async function createCall(request: CreateCallRequest, options: ServiceOptions = {}): Promise<CallCreated> {
  const response = await postJson("/realtime/calls", request, options, options.callTimeoutMs ?? 30_000);
  if (!response.ok) throw await serviceError(response);
  let body: CallCreated;
  try {
    body = (await response.json()) as CallCreated;
  } catch (cause) {
    throw new VoiceError("service_unavailable", { status: response.status, code: "bad_answer", cause });
  }
  if (
    typeof body?.call_id !== "string" ||
    typeof body.session_id !== "string" ||
    typeof body.sdp_answer !== "string" ||
    !body.sdp_answer.startsWith("v=0") ||
    typeof body.agent?.voice !== "string"
  ) {
    throw new VoiceError("service_unavailable", { status: response.status, code: "bad_answer" });
  }
  return body;
}

/** Options of {@link endCall}. */
export interface EndCallOptions {
  /**
   * Use this bearer token as is instead of asking `getAuthToken`: the request then starts
   * synchronously, which a `pagehide` handler needs.
   */
  token?: string | null;
  /** Send with `keepalive: true`, so the request outlives the page (use on unload). */
  keepalive?: boolean;
}

/**
 * Hang up `callId` at the service (`DELETE /realtime/calls/{call_id}`). Best effort and
 * bounded: resolves true on 204, false on any other answer (404 when the call had already
 * ended), a transport failure or the timeout; never rejects.
 */
export function endCall(callId: string, options: ServiceOptions = {}, how: EndCallOptions = {}): Promise<boolean> {
  const url = joinUrl(options.baseUrl ?? "", `/realtime/calls/${encodeURIComponent(callId)}`);
  const send = (token: string | null | undefined): Promise<boolean> => {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (token) headers["Authorization"] = `Bearer ${token}`;
    const init: RequestInit = { method: "DELETE", headers, cache: "no-store" };
    if (how.keepalive) init.keepalive = true;
    return fetchWithTimeout(options.fetch ?? globalFetch, url, init, options.hangupTimeoutMs ?? 3000).then(
      (response) => response.status === 204,
      () => false,
    );
  };
  if (how.token !== undefined) return send(how.token);
  return (async () => {
    let token: string | null | undefined;
    try {
      token = await options.getAuthToken?.();
    } catch {
      return false;
    }
    return send(token);
  })();
}
