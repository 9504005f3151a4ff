/** `POST /realtime/sessions`: ask the service for a single-use Azure key and a memory grant. */

import { VoiceError } from "./errors";
import { type FetchLike, TimeoutError, fetchWithTimeout, globalFetch, joinUrl, readProblem, retryAfterMs } from "./http";
import type { CreateSessionRequest, SessionCreated } from "./types";

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
}

/**
 * Mint a realtime session for `request.agent`. Call it right before posting the SDP offer:
 * the key inside is single-use and expires within a minute.
 *
 * @throws {VoiceError} `unauthenticated`, `forbidden`, `mint_refused`, `rate_limited`,
 *   `service_unavailable` or `service_unreachable`.
 */
export async function mintSession(request: CreateSessionRequest, options: ServiceOptions = {}): Promise<SessionCreated> {
  const headers: Record<string, string> = { "Content-Type": "application/json", Accept: "application/json" };
  const token = await options.getAuthToken?.();
  if (token) headers["Authorization"] = `Bearer ${token}`;
  const url = joinUrl(options.baseUrl ?? "", "/realtime/sessions");
  let response: Response;
  try {
    response = await fetchWithTimeout(
      options.fetch ?? globalFetch,
      url,
      { method: "POST", headers, body: JSON.stringify(request), cache: "no-store" },
      options.timeoutMs ?? 15_000,
    );
  } catch (cause) {
    throw new VoiceError("service_unreachable", { cause, code: cause instanceof TimeoutError ? "timeout" : "network" });
  }
  if (response.ok) {
    const body = (await response.json()) as SessionCreated;
    if (typeof body?.client_secret?.value !== "string" || typeof body.webrtc_url !== "string") {
      throw new VoiceError("service_unavailable", { status: response.status, code: "bad_answer" });
    }
    return body;
  }
  const problem = await readProblem(response);
  const init = { status: response.status, code: problem?.code, problem };
  const status = response.status;
  if (status === 401) throw new VoiceError("unauthenticated", init);
  if (status === 403) throw new VoiceError("forbidden", init);
  if (status === 429) {
    const wait = retryAfterMs(response.headers.get("Retry-After"));
    throw new VoiceError("rate_limited", {
      ...init,
      retryAfterSeconds: wait === undefined ? undefined : Math.ceil(wait / 1000),
    });
  }
  if (status >= 500) throw new VoiceError("service_unavailable", init);
  throw new VoiceError("mint_refused", init);
}
