/** Test doubles shared by the web client's unit tests. */

import type { Clock } from "../src/lib/clock";
import type { EnrichRequest } from "../src/lib/types";

/** One request the fake fetch received. */
export interface Seen {
  url: string;
  method: string;
  headers: Record<string, string>;
  body: string;
  /** Whether the request was sent with `keepalive: true` (outlives the page). */
  keepalive: boolean;
}

type Reply = Response | Error | "hang" | Promise<Response>;
type Answer = Reply | ((seen: Seen) => Reply);

/**
 * A scripted `fetch`: answers are consumed in order (the last one repeats); `"hang"` never
 * answers until the request is aborted; an Error rejects like a network failure; a promise
 * answers when the test resolves it.
 */
export function scriptedFetch(...answers: Answer[]): {
  fetch: (input: string, init?: RequestInit) => Promise<Response>;
  seen: Seen[];
} {
  const seen: Seen[] = [];
  const fetch = (input: string, init: RequestInit = {}): Promise<Response> => {
    const headers: Record<string, string> = {};
    new Headers(init.headers).forEach((value, key) => {
      headers[key] = value;
    });
    const request: Seen = {
      url: input,
      method: init.method ?? "GET",
      headers,
      body: String(init.body ?? ""),
      keepalive: init.keepalive === true,
    };
    seen.push(request);
    const scripted = answers.length > 1 ? answers.shift() : answers[0];
    const answer = typeof scripted === "function" ? scripted(request) : scripted;
    if (answer === undefined) return Promise.reject(new Error("no scripted answer"));
    if (answer instanceof Error) return Promise.reject(answer);
    if (answer === "hang") {
      return new Promise((_, reject) => {
        init.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      });
    }
    if (answer instanceof Promise) return answer.then((response) => response.clone());
    return Promise.resolve(answer.clone());
  };
  return { fetch, seen };
}

/** A `202 Accepted` answer of `/memory/enrich`. */
export function accepted(accepted = 1, duplicates = 0): Response {
  return new Response(JSON.stringify({ accepted, duplicates }), {
    status: 202,
    headers: { "Content-Type": "application/json" },
  });
}

/** A problem+json answer. */
export function problem(status: number, code: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ type: "about:blank", title: code, status, detail: `${code} detail`, code }), {
    status,
    headers: { "Content-Type": "application/problem+json", ...headers },
  });
}

/** The messages' ids of an enrich request body. */
export function ids(body: string): string[] {
  return (JSON.parse(body) as EnrichRequest).messages.map((m) => m.id);
}

/** TypeError like the one fetch rejects with when the network is down. */
export function networkDown(): TypeError {
  return new TypeError("Failed to fetch");
}

/** A {@link Clock} on the platform timers that knows which of its timers are still pending. */
export interface TrackedClock extends Clock {
  /** How many timers were set and neither fired nor were cleared. */
  pending(): number;
}

/** A clock whose pending timers a test can count (a leaked timer keeps the count above 0). */
export function trackedClock(): TrackedClock {
  const live = new Set<unknown>();
  return {
    now: () => Date.now(),
    setTimeout(callback, ms) {
      const handle: unknown = globalThis.setTimeout(() => {
        live.delete(handle);
        callback();
      }, ms);
      live.add(handle);
      return handle;
    },
    clearTimeout(handle) {
      live.delete(handle);
      globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>);
    },
    pending: () => live.size,
  };
}
