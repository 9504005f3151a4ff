/**
 * The browser-direct flow's SDP exchange (Azure OpenAI only): post the offer straight to
 * Azure with the single-use key the service minted (`POST /realtime/sessions`). The default
 * flow posts the offer to the service instead (`createCall` in ./api).
 */

import { VoiceError } from "./errors.js";
import { type FetchLike, TimeoutError, fetchWithTimeout } from "./http.js";
import type { SessionCreated } from "./types.js";

/**
 * `POST {webrtc_url}` with `Authorization: Bearer ek_…`; returns Azure's SDP answer.
 *
 * @throws {VoiceError} `azure_unreachable` (network, timeout, 429, 5xx) or `azure_refused`.
 */
export async function exchangeSdpWithAzure(session: SessionCreated, offer: string, fetchImpl: FetchLike, timeoutMs: number): Promise<string> {
  let response: Response;
  try {
    response = await fetchWithTimeout(
      fetchImpl,
      session.webrtc_url,
      {
        method: "POST",
        headers: { Authorization: `Bearer ${session.client_secret.value}`, "Content-Type": "application/sdp" },
        body: offer,
        cache: "no-store",
      },
      timeoutMs,
    );
  } catch (cause) {
    throw new VoiceError("azure_unreachable", { cause, code: cause instanceof TimeoutError ? "timeout" : "network" });
  }
  if (!response.ok) {
    let code: string | undefined;
    try {
      const body = (await response.json()) as { error?: { code?: string } };
      code = body.error?.code ?? undefined;
    } catch {
      code = undefined;
    }
    const kind = response.status >= 500 || response.status === 429 ? "azure_unreachable" : "azure_refused";
    throw new VoiceError(kind, { status: response.status, code });
  }
  return response.text();
}
