import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";

import { type MemoryGrant, type MemoryState, MemoryOutbox, type OutboxOptions } from "../src/lib/outbox";
import { MemoryStorage } from "../src/lib/storage";
import type { EnrichMessage, EnrichRequest } from "../src/lib/types";
import { accepted, ids, networkDown, problem, scriptedFetch } from "./helpers";

const GRANT: MemoryGrant = { sessionId: "vs_1", enrichUrl: "/memory/enrich", token: "tok-1", expiresAt: 2_000_000_000 };
const turn = (id: string, text = `text of ${id}`, role: EnrichMessage["role"] = "user"): EnrichMessage => ({ id, role, text });
const KEY = "engram-voice.outbox.vs_1";

function outbox(options: OutboxOptions): { outbox: MemoryOutbox; states: MemoryState[] } {
  const box = new MemoryOutbox({
    baseUrl: "http://127.0.0.1:8000",
    sendBeacon: null,
    random: () => 0.5,
    ...options,
  });
  const states: MemoryState[] = [];
  box.on("state", (state) => states.push(state));
  return { outbox: box, states };
}

describe("MemoryOutbox", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("batches turns added close together into one authenticated post", async () => {
    const storage = new MemoryStorage();
    const { fetch, seen } = scriptedFetch(accepted(2));
    const { outbox: box, states } = outbox({ fetch, storage });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    box.add("vs_1", turn("item_2", "reply", "assistant"));
    expect(box.state()).toMatchObject({ status: "pending", pending: 2 });
    expect(storage.getItem(KEY)).not.toBeNull();

    await vi.advanceTimersByTimeAsync(300);

    expect(seen).toHaveLength(1);
    const [post] = seen;
    expect(post?.url).toBe("http://127.0.0.1:8000/memory/enrich");
    expect(post?.headers["authorization"]).toBe("Bearer tok-1");
    expect(post?.headers["content-type"]).toBe("application/json");
    const body = JSON.parse(post?.body ?? "") as EnrichRequest;
    expect(body).toEqual({ session_id: "vs_1", messages: [turn("item_1"), turn("item_2", "reply", "assistant")] });
    expect(box.state()).toMatchObject({ status: "saved", pending: 0, saved: 2, lastError: null });
    expect(states.map((s) => `${s.status}:${s.pending}`)).toEqual(["pending:1", "pending:2", "saving:2", "saved:0"]);
    expect(storage.getItem(KEY)).toBeNull();
  });

  it("retries 5xx answers with growing backoff until the service accepts", async () => {
    const { fetch, seen } = scriptedFetch(problem(503, "storage_unavailable"), problem(500, "internal_error"), accepted());
    const { outbox: box } = outbox({ fetch, storage: null, backoff: { baseMs: 1000, maxMs: 30_000 } });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    await vi.advanceTimersByTimeAsync(300);
    expect(seen).toHaveLength(1);
    expect(box.state()).toMatchObject({ status: "retrying", pending: 1 });
    expect(box.state().retryAt).toBe(Date.now() + 750);

    await vi.advanceTimersByTimeAsync(749);
    expect(seen).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(seen).toHaveLength(2);
    expect(box.state().status).toBe("retrying");

    await vi.advanceTimersByTimeAsync(1500);
    expect(seen).toHaveLength(3);
    expect(box.state()).toMatchObject({ status: "saved", saved: 1, pending: 0 });
    expect(seen.map((s) => ids(s.body))).toEqual([["item_1"], ["item_1"], ["item_1"]]);
  });

  it("honours Retry-After on 429 and never retries earlier", async () => {
    const { fetch, seen } = scriptedFetch(problem(429, "rate_limited", { "Retry-After": "7" }), accepted());
    const { outbox: box } = outbox({ fetch, storage: null });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    await vi.advanceTimersByTimeAsync(300);
    expect(box.state().retryAt).toBe(Date.now() + 7000);

    await vi.advanceTimersByTimeAsync(6999);
    expect(seen).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(seen).toHaveLength(2);
    expect(box.state().status).toBe("saved");
  });

  it("accepts Retry-After as an HTTP date", async () => {
    vi.setSystemTime(new Date("2026-05-01T10:00:00Z"));
    const { fetch, seen } = scriptedFetch(
      problem(503, "storage_unavailable", { "Retry-After": "Fri, 01 May 2026 10:00:20 GMT" }),
      accepted(),
    );
    const { outbox: box } = outbox({ fetch, storage: null });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    await vi.advanceTimersByTimeAsync(300);
    await vi.advanceTimersByTimeAsync(19_600);
    expect(seen).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(100);
    expect(seen).toHaveLength(2);
  });

  it("retries when the service is unreachable or does not answer in time", async () => {
    const { fetch, seen } = scriptedFetch(networkDown(), "hang", accepted());
    const { outbox: box } = outbox({ fetch, storage: null, requestTimeoutMs: 2000 });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    await vi.advanceTimersByTimeAsync(300);
    expect(box.state()).toMatchObject({ status: "retrying", lastError: "Memory service unreachable; will retry." });

    await vi.advanceTimersByTimeAsync(750);
    expect(seen).toHaveLength(2);
    expect(box.state().status).toBe("saving");
    await vi.advanceTimersByTimeAsync(2000);
    expect(box.state().status).toBe("retrying");

    await vi.advanceTimersByTimeAsync(1500);
    expect(seen).toHaveLength(3);
    expect(box.state()).toMatchObject({ status: "saved", saved: 1, lastError: null });
  });

  it("keeps unsent turns in storage and delivers them from a new page", async () => {
    const storage = new MemoryStorage();
    const down = scriptedFetch(networkDown());
    const { outbox: first } = outbox({ fetch: down.fetch, storage });
    first.open(GRANT);
    first.add("vs_1", turn("item_1"));
    first.add("vs_1", turn("item_2"));
    await vi.advanceTimersByTimeAsync(300);
    expect(first.state().status).toBe("retrying");
    first.dispose(); // the page goes away

    const up = scriptedFetch(accepted(2));
    const { outbox: second } = outbox({ fetch: up.fetch, storage });
    expect(second.restore()).toBe(2);
    await vi.advanceTimersByTimeAsync(0);

    expect(up.seen).toHaveLength(1);
    expect(up.seen[0]?.headers["authorization"]).toBe("Bearer tok-1");
    expect(ids(up.seen[0]?.body ?? "")).toEqual(["item_1", "item_2"]);
    expect(second.state()).toMatchObject({ status: "saved", saved: 2, pending: 0 });
    expect(storage.length).toBe(0);
  });

  it("skips broken storage entries and leaves other keys alone", () => {
    const storage = new MemoryStorage();
    storage.setItem("engram-voice.outbox.vs_bad", "{not json");
    storage.setItem("unrelated", "keep");
    const { outbox: box } = outbox({ fetch: scriptedFetch(accepted()).fetch, storage });
    expect(box.restore()).toBe(0);
    expect(storage.getItem("engram-voice.outbox.vs_bad")).toBeNull();
    expect(storage.getItem("unrelated")).toBe("keep");
  });

  it("beacons unsent turns as text/plain with the token in the body and keeps them stored", async () => {
    const storage = new MemoryStorage();
    const beacons: { url: string; data: string }[] = [];
    const sendBeacon = (url: string, data: string): boolean => {
      beacons.push({ url, data });
      return true;
    };
    const { fetch, seen } = scriptedFetch(accepted(2));
    const { outbox: box } = outbox({ fetch, storage, sendBeacon });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    box.add("vs_1", turn("item_2"));

    expect(box.beacon()).toBe(2);
    expect(box.beacon()).toBe(0); // pagehide after visibilitychange: nothing new to send
    expect(beacons).toHaveLength(1);
    expect(beacons[0]?.url).toBe("http://127.0.0.1:8000/memory/enrich");
    expect(typeof beacons[0]?.data).toBe("string"); // a string body is sent as text/plain: no preflight
    expect(JSON.parse(beacons[0]?.data ?? "")).toEqual({
      session_id: "vs_1",
      messages: [turn("item_1"), turn("item_2")],
      token: "tok-1",
    });
    expect(storage.getItem(KEY)).not.toBeNull();

    await vi.advanceTimersByTimeAsync(300); // the page lived on: a real post confirms them
    expect(seen).toHaveLength(1);
    expect(storage.getItem(KEY)).toBeNull();
  });

  it("splits beacons to stay under the beacon size budget", () => {
    const beacons: string[] = [];
    const { outbox: box } = outbox({
      fetch: scriptedFetch(accepted()).fetch,
      storage: null,
      sendBeacon: (_url, data) => beacons.push(data) > 0,
    });
    box.open(GRANT);
    for (let i = 0; i < 12; i += 1) box.add("vs_1", turn(`item_${i}`, "x".repeat(9000)));
    expect(box.beacon()).toBe(12);
    expect(beacons.length).toBeGreaterThan(1);
    for (const data of beacons) expect(new TextEncoder().encode(data).length).toBeLessThan(64 * 1024);
    expect(beacons.flatMap((data) => ids(data))).toEqual(Array.from({ length: 12 }, (_, i) => `item_${i}`));
  });

  it("stops beaconing when the browser refuses a beacon", () => {
    const { outbox: box } = outbox({ fetch: scriptedFetch(accepted()).fetch, storage: null, sendBeacon: () => false });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    expect(box.beacon()).toBe(0);
  });

  it("drops a session's turns when its token is refused, and says so", async () => {
    const storage = new MemoryStorage();
    const { fetch, seen } = scriptedFetch(problem(401, "unauthenticated"));
    const { outbox: box } = outbox({ fetch, storage });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    box.add("vs_1", turn("item_2"));
    await vi.advanceTimersByTimeAsync(300);
    await vi.advanceTimersByTimeAsync(60_000);

    expect(seen).toHaveLength(1);
    expect(box.state()).toMatchObject({ status: "failed", pending: 0, failed: 2 });
    expect(box.state().lastError).toMatch(/token was refused/);
    expect(storage.getItem(KEY)).toBeNull();
  });

  it("isolates a turn the service rejects so the others are still saved", async () => {
    const { fetch, seen } = scriptedFetch((request) =>
      ids(request.body).includes("item_bad") ? problem(400, "validation_failed") : accepted(ids(request.body).length),
    );
    const { outbox: box } = outbox({ fetch, storage: null });
    box.open(GRANT);
    for (const id of ["item_1", "item_2", "item_bad", "item_4"]) box.add("vs_1", turn(id));
    await vi.advanceTimersByTimeAsync(300);

    expect(box.state()).toMatchObject({ saved: 3, failed: 1, pending: 0 });
    expect(seen.map((s) => ids(s.body))).toEqual([
      ["item_1", "item_2", "item_bad", "item_4"],
      ["item_1", "item_2"],
      ["item_bad", "item_4"],
      ["item_bad"],
      ["item_4"],
    ]);
  });

  it("validates turns against the service's limits before queueing them", async () => {
    const { fetch, seen } = scriptedFetch(accepted());
    const { outbox: box } = outbox({ fetch, storage: null });
    box.open(GRANT);
    expect(box.add("vs_1", turn("bad id with spaces"))).toBe(false);
    expect(box.add("vs_1", turn("item_empty", "   "))).toBe(false);
    expect(box.add("vs_other", turn("item_1"))).toBe(false); // no grant for that session
    expect(box.add("vs_1", turn("item_long", "é".repeat(12_000)))).toBe(true);
    expect(box.add("vs_1", turn("item_long", "again"))).toBe(true); // same id: already queued
    await vi.advanceTimersByTimeAsync(300);

    const body = JSON.parse(seen[0]?.body ?? "") as EnrichRequest;
    expect(body.messages).toHaveLength(1);
    expect(body.messages[0]?.text).toHaveLength(10_000);
    expect(box.state()).toMatchObject({ failed: 1, saved: 1 });
  });

  it("delivers from memory when storage throws", async () => {
    const storage = new MemoryStorage();
    storage.setItem = () => {
      throw new DOMException("full", "QuotaExceededError");
    };
    const { fetch, seen } = scriptedFetch(accepted());
    const { outbox: box } = outbox({ fetch, storage });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    await vi.advanceTimersByTimeAsync(300);
    expect(seen).toHaveLength(1);
    expect(box.state().status).toBe("saved");
  });

  it("posts at most maxBatch turns at a time, in order", async () => {
    const { fetch, seen } = scriptedFetch((request) => accepted(ids(request.body).length));
    const { outbox: box } = outbox({ fetch, storage: null, maxBatch: 2 });
    box.open(GRANT);
    for (const id of ["item_1", "item_2", "item_3"]) box.add("vs_1", turn(id));
    await vi.advanceTimersByTimeAsync(300);
    expect(seen.map((s) => ids(s.body))).toEqual([["item_1", "item_2"], ["item_3"]]);
  });

  it("retryNow skips the backoff (the browser came back online)", async () => {
    const { fetch, seen } = scriptedFetch(networkDown(), accepted());
    const { outbox: box } = outbox({ fetch, storage: null });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    await vi.advanceTimersByTimeAsync(300);
    expect(box.state().status).toBe("retrying");
    box.retryNow();
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toHaveLength(2);
    expect(box.state().status).toBe("saved");
  });

  it("flush posts at once without the batching delay", async () => {
    const { fetch, seen } = scriptedFetch(accepted());
    const { outbox: box } = outbox({ fetch, storage: null });
    box.open(GRANT);
    box.add("vs_1", turn("item_1"));
    box.flush();
    await vi.advanceTimersByTimeAsync(0);
    expect(seen).toHaveLength(1);
  });
});
