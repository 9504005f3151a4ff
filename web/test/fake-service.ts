/**
 * The service's call endpoints as a scripted fetch: `POST`/`DELETE /realtime/calls`,
 * `/memory/enrich` and `GET /memory/sessions/{id}/progress`.
 */

import type { MemoryProgressWire } from "../src/lib/memory-progress";
import type { CallCreated } from "../src/lib/types";
import { FakePeerConnection } from "./fake-rtc";
import { type Seen, accepted, ids, scriptedFetch } from "./helpers";

/** `expires_at` of the scripted call (Unix seconds). */
export const EXPIRES_AT = 1_767_225_600;

/** The `201` body of `POST /realtime/calls` when all is well. */
export const CALL: CallCreated = {
  call_id: "rc_1a2b",
  session_id: "vs_abc",
  conversation_id: "cv_x.y",
  agent: { id: "elena", name: "Elena", voice: "en-US-Ava:DragonHDLatestNeural" },
  upstream: "voice-live",
  sdp_answer: "v=0 fake-answer",
  expires_at: EXPIRES_AT,
  memory: { enrich_url: "/memory/enrich", token: "mem-token", expires_at: EXPIRES_AT + 900 },
};

/** How one endpoint answers a request. */
export type Route = (seen: Seen) => Response | Error | "hang" | Promise<Response>;

/** A `201 Created` answer of `POST /realtime/calls`, with `call` overriding the defaults. */
export const created = (call: Partial<CallCreated> = {}): Response =>
  new Response(JSON.stringify({ ...CALL, ...call }), {
    status: 201,
    headers: { "Content-Type": "application/json", Location: `/realtime/calls/${call.call_id ?? CALL.call_id}` },
  });

/** A `200` answer of `GET /memory/sessions/{id}/progress`: nothing queued, delivered or dead-lettered unless `progress` says so. */
export function progressAnswer(sessionId: string, progress: Partial<MemoryProgressWire> = {}): Response {
  const body: MemoryProgressWire = { session_id: sessionId, queued: 0, delivered: 0, dead_lettered: 0, retrying: false, next_attempt_at: null, ...progress };
  return new Response(JSON.stringify(body), { status: 200, headers: { "Content-Type": "application/json" } });
}

/** The session a progress request asks about (`…/memory/sessions/{id}/progress`), or null for another URL. */
export function progressSession(url: string): string | null {
  const match = /\/memory\/sessions\/([^/]+)\/progress$/.exec(url);
  return match?.[1] ? decodeURIComponent(match[1]) : null;
}

/** The progress requests among `seen`, in order. */
export const progressRequests = (seen: Seen[]): Seen[] => seen.filter((s) => progressSession(s.url) !== null);

/**
 * The service as it answers when all is well: 201 with the answer, 204 on DELETE, 202 for
 * memory, and progress reporting every turn it accepted (`202`) as delivered to memory.
 */
export function service(overrides: { create?: Route; end?: Route; enrich?: Route; progress?: Route } = {}): ReturnType<typeof scriptedFetch> {
  const create: Route = overrides.create ?? (() => created());
  const end: Route = overrides.end ?? (() => new Response(null, { status: 204 }));
  const enrich: Route = overrides.enrich ?? ((seen) => accepted(ids(seen.body).length));
  /** Turn ids the enrich route accepted, per session. */
  const stored = new Map<string, Set<string>>();
  const progress: Route =
    overrides.progress ??
    ((seen) => {
      const sessionId = progressSession(seen.url) ?? "";
      return progressAnswer(sessionId, { delivered: stored.get(sessionId)?.size ?? 0 });
    });
  return scriptedFetch((seen) => {
    if (seen.url.endsWith("/realtime/calls") && seen.method === "POST") {
      FakePeerConnection.log.push("POST call");
      return create(seen);
    }
    if (seen.url.includes("/realtime/calls/") && seen.method === "DELETE") {
      FakePeerConnection.log.push("DELETE call");
      return end(seen);
    }
    if (seen.url.endsWith("/memory/enrich")) {
      const answer = enrich(seen);
      if (answer instanceof Response && answer.status === 202) {
        const body = JSON.parse(seen.body) as { session_id: string };
        const turns = stored.get(body.session_id) ?? new Set<string>();
        for (const id of ids(seen.body)) turns.add(id);
        stored.set(body.session_id, turns);
      }
      return answer;
    }
    if (progressSession(seen.url) !== null && seen.method === "GET") {
      if (!seen.headers["authorization"]?.startsWith("Bearer ")) return new Response(null, { status: 401 });
      return progress(seen);
    }
    return new Error(`unexpected request ${seen.method} ${seen.url}`);
  });
}
