/** The service's call endpoints as a scripted fetch: `POST`/`DELETE /realtime/calls`, `/memory/enrich`. */

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

/** The service as it answers when all is well: 201 with the answer, 204 on DELETE, 202 for memory. */
export function service(overrides: { create?: Route; end?: Route; enrich?: Route } = {}): ReturnType<typeof scriptedFetch> {
  const create: Route = overrides.create ?? (() => created());
  const end: Route = overrides.end ?? (() => new Response(null, { status: 204 }));
  const enrich: Route = overrides.enrich ?? ((seen) => accepted(ids(seen.body).length));
  return scriptedFetch((seen) => {
    if (seen.url.endsWith("/realtime/calls") && seen.method === "POST") {
      FakePeerConnection.log.push("POST call");
      return create(seen);
    }
    if (seen.url.includes("/realtime/calls/") && seen.method === "DELETE") {
      FakePeerConnection.log.push("DELETE call");
      return end(seen);
    }
    if (seen.url.endsWith("/memory/enrich")) return enrich(seen);
    return new Error(`unexpected request ${seen.method} ${seen.url}`);
  });
}
