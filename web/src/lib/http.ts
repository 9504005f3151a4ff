/** Small HTTP helpers shared by minting, the SDP exchange and the memory outbox. */

import type { Problem } from "./types.js";

/** The `fetch` signature the library uses; inject your own in tests or host apps. */
export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/** Thrown by {@link fetchWithTimeout} when the answer took longer than its bound. */
export class TimeoutError extends Error {
  override readonly name = "TimeoutError";
}

/** The global `fetch`, looked up at call time (so test doubles installed later apply). */
export const globalFetch: FetchLike = (input, init) => globalThis.fetch(input, init);

/**
 * `fetch` bounded by `timeoutMs`: rejects with {@link TimeoutError} when no answer came in
 * time (network failures reject with the platform's `TypeError`, as `fetch` does).
 */
export async function fetchWithTimeout(
  fetchImpl: FetchLike,
  url: string,
  init: RequestInit,
  timeoutMs: number,
): Promise<Response> {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  try {
    return await fetchImpl(url, { ...init, signal: controller.signal });
  } catch (error) {
    if (timedOut) throw new TimeoutError(`no answer from ${url} within ${timeoutMs} ms`);
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Parse a `Retry-After` header (delay in seconds or an HTTP date) into milliseconds from
 * `now`; `undefined` when absent or unreadable.
 */
export function retryAfterMs(value: string | null, now: number = Date.now()): number | undefined {
  if (value === null) return undefined;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/** Read a problem+json (or any JSON object) body; `undefined` if the body is not one. */
export async function readProblem(response: Response): Promise<Problem | undefined> {
  try {
    const body: unknown = await response.json();
    return typeof body === "object" && body !== null ? (body as Problem) : undefined;
  } catch {
    return undefined;
  }
}

/** Join a base URL (possibly empty, meaning this page's origin) and an absolute path. */
export function joinUrl(baseUrl: string, path: string): string {
  if (/^https?:\/\//i.test(path)) return path;
  return baseUrl.replace(/\/+$/, "") + (path.startsWith("/") ? path : `/${path}`);
}
