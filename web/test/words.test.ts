import { describe, expect, it } from "vitest";

import { AGENTS, upstreamLabel, voiceLabel } from "../src/demo/words";

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
