import { describe, expect, it } from "vitest";

import type { CallMemoryProgress } from "../src/lib";
import { AGENTS, connectionLabel, memoryLabel, upstreamLabel, voiceLabel } from "../src/demo/words";

describe("the demo's voice labels", () => {
  it.each([
    ["en-US-Ava:DragonHDLatestNeural", "Ava (HD neural)"],
    ["en-US-GuyNeural", "Guy (neural)"],
    ["en-US-AvaNeural", "Ava (neural)"],
    ["zh-CN-XiaoxiaoNeural", "Xiaoxiao (neural)"],
    ["marin", "marin"],
    ["cedar", "cedar"],
    ["something-else", "something-else"],
  ])("shortens the service's voice name %s to %s", (voice, label) => {
    expect(voiceLabel(voice)).toBe(label);
  });

  it("labels each agent with a voice before the first call, naming no other agent (radio names stay unique)", () => {
    for (const agent of AGENTS) {
      expect(agent.voice).not.toBe("");
      for (const other of AGENTS) if (other.id !== agent.id) expect(`${agent.style} ${agent.voice}`).not.toContain(other.name);
    }
  });

  it("names the upstreams in words", () => {
    expect(upstreamLabel("voice-live")).toBe("Azure AI Voice Live");
    expect(upstreamLabel("azure-openai")).toBe("Azure OpenAI");
    expect(upstreamLabel("other")).toBe("other");
  });
});

describe("the demo's memory and call labels", () => {
  const call = (over: Partial<CallMemoryProgress>): CallMemoryProgress => ({
    sessionId: "vs_1",
    status: "idle",
    unsent: 0,
    queued: 0,
    saved: 0,
    failed: 0,
    retryAt: null,
    settled: true,
    ...over,
  });

  it.each<[Partial<CallMemoryProgress>, string]>([
    [{ status: "off", sessionId: null }, "Memory is off for this call"],
    [{ status: "idle" }, "Nothing to save yet"],
    [{ status: "queued", unsent: 1, queued: 3 }, "Queued: 4 turns not in memory yet"],
    [{ status: "queued", queued: 1, saved: 3 }, "Queued: 1 turn not in memory yet, 3 saved"],
    [{ status: "queued", queued: 2, retryAt: 5_000 }, "Queued: 2 turns not in memory yet (memory store unreachable, retrying in 4 s)"],
    [{ status: "retrying", unsent: 2, retryAt: 5_000 }, "Can't reach the memory service, retrying in 4 s: 2 turns kept in this browser"],
    [{ status: "saved", saved: 4 }, "Saved to memory (4 turns)"],
    [{ status: "failed", failed: 1, saved: 3 }, "Failed: 1 turn couldn't be saved (3 saved)"],
    [{ status: "failed", failed: 4 }, "Failed: 4 turns couldn't be saved"],
  ])("labels %o as %s", (over, text) => {
    expect(memoryLabel(call(over), 1_000).text).toBe(text);
  });

  it("says saved only for a call whose turns are all in memory", () => {
    for (const status of ["off", "idle", "queued", "retrying", "failed"] as const) {
      expect(memoryLabel(call({ status, saved: 2 })).text.toLowerCase()).not.toContain("saved to memory");
    }
  });

  it("says Call failed only for a call that was started", () => {
    expect(connectionLabel("failed", "Elena", false).text).toBe("Couldn't connect");
    expect(connectionLabel("failed", "Elena", true).text).toBe("Call failed");
  });
});
