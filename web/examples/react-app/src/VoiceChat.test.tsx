import { MemoryOutbox, MemoryStorage, type VoiceClientOptions } from "@engram/voice-client";
import { act, cleanup, fireEvent, render, screen, waitFor } from "@testing-library/react";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { StrictMode } from "react";
import { afterEach, describe, expect, it } from "vitest";

import { FakePeerConnection, FakeStream } from "../../../test/fake-rtc";
import { CALL, type Route, progressAnswer, progressRequests, service } from "../../../test/fake-service";
import { problem } from "../../../test/helpers";
import { VoiceChat } from "./VoiceChat.js";

const BASE_URL = "http://127.0.0.1:8000";

/** Client options on the fake browser and a scripted service, built from the package's own exports. */
function fakeBrowser(routes: { create?: Route; progress?: Route } = {}) {
  const fetchPair = service(routes);
  const microphone = new FakeStream();
  const options: VoiceClientOptions = {
    baseUrl: BASE_URL,
    fetch: fetchPair.fetch,
    memory: new MemoryOutbox({ fetch: fetchPair.fetch, baseUrl: BASE_URL, storage: new MemoryStorage(), sendBeacon: null }),
    pageLifecycle: false,
    rtc: {
      RTCPeerConnection: FakePeerConnection as unknown as typeof RTCPeerConnection,
      mediaDevices: { getUserMedia: async () => microphone as unknown as MediaStream },
      createAudio: () => ({ autoplay: false, srcObject: null, play: async () => undefined, pause: () => undefined }) as unknown as HTMLAudioElement,
    },
  };
  return { options, microphone, seen: fetchPair.seen };
}

/** Ask for the call's memory progress every few milliseconds (the default starts at 1 s). */
const FAST = { minDelayMs: 5, maxDelayMs: 20 };

describe("the React example app's VoiceChat (the published package, as web/README.md shows it)", () => {
  afterEach(() => cleanup());

  it("talks, shows the transcript, mutes and hangs up through useVoiceSession", async () => {
    const { options, microphone, seen } = fakeBrowser();
    render(<StrictMode><VoiceChat agent="elena" {...options} memoryProgress={FAST} /></StrictMode>);
    expect(screen.getByRole("status").textContent).toBe("idle · memory idle");

    fireEvent.click(screen.getByRole("button", { name: "Talk" }));
    await waitFor(() => expect(screen.getByRole("status").textContent).toBe("connected · memory idle"));
    act(() => {
      FakePeerConnection.last?.channelNamed("voice-live-events")?.receive({
        type: "conversation.item.input_audio_transcription.completed",
        item_id: "item_u1",
        transcript: "Hello Elena",
      });
    });
    expect(screen.getByRole("listitem").textContent).toBe("user: Hello Elena");

    fireEvent.click(screen.getByRole("button", { name: "Mute" }));
    expect(microphone.tracks[0]?.enabled).toBe(false);
    expect(screen.getByRole("button", { name: "Unmute" })).toBeTruthy();

    fireEvent.click(screen.getByRole("button", { name: "Hang up" }));
    await waitFor(() => expect(screen.getByRole("status").textContent).toMatch(/^ended · memory (queued|saved)$/));
    await waitFor(() => expect(FakePeerConnection.last?.closed).toBe(true));
    await waitFor(() => expect(screen.getByRole("status").textContent).toBe("ended · memory saved")); // the service delivered the turn
    expect(seen.filter((s) => s.method === "DELETE")).toHaveLength(1);
    expect(screen.getByRole("button", { name: /mute/i }).hasAttribute("disabled")).toBe(true);
    expect(screen.getByRole("button", { name: "Talk" })).toBeTruthy();
  });

  it("says memory queued, never saved, while the service has not delivered the call's turns (Zep down)", async () => {
    const { options, seen } = fakeBrowser({ progress: () => progressAnswer(CALL.session_id, { queued: 1, retrying: true, next_attempt_at: 1_900_000_000 }) });
    render(<VoiceChat agent="elena" {...options} memoryProgress={FAST} />);
    fireEvent.click(screen.getByRole("button", { name: "Talk" }));
    await waitFor(() => expect(screen.getByRole("status").textContent).toBe("connected · memory idle"));
    act(() => {
      FakePeerConnection.last?.channelNamed("voice-live-events")?.receive({
        type: "conversation.item.input_audio_transcription.completed",
        item_id: "item_u1",
        transcript: "Remember this",
      });
    });
    fireEvent.click(screen.getByRole("button", { name: "Hang up" }));
    await waitFor(() => expect(progressRequests(seen).length).toBeGreaterThanOrEqual(2));
    expect(screen.getByRole("status").textContent).toBe("ended · memory queued");
  });

  it("shows why a call failed in plain words, and lets the user try again", async () => {
    const { options } = fakeBrowser({ create: () => problem(503, "upstream_unavailable") });
    render(<VoiceChat agent="elena" {...options} />);
    fireEvent.click(screen.getByRole("button", { name: "Talk" }));
    await waitFor(() => expect(screen.getByRole("status").textContent).toMatch(/^The voice service can.t reach Azure right now/));
    expect(screen.getByRole("button", { name: "Talk" })).toBeTruthy();
  });

  it("is the component web/README.md shows, line for line", () => {
    const here = dirname(fileURLToPath(import.meta.url));
    const readme = readFileSync(join(here, "../../../README.md"), "utf8");
    const shown = /```tsx\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(shown).toBe(readFileSync(join(here, "VoiceChat.tsx"), "utf8"));
  });
});
