import { describe, expect, it } from "vitest";

import { VoiceError, describeError, microphoneError } from "../src/lib/errors";
import { mintSession } from "../src/lib/api";
import { problem, scriptedFetch } from "./helpers";

describe("plain-words errors", () => {
  it("maps getUserMedia failures to denied, missing and busy", () => {
    expect(microphoneError(new DOMException("x", "NotAllowedError")).kind).toBe("microphone_denied");
    expect(microphoneError(new DOMException("x", "SecurityError")).kind).toBe("microphone_denied");
    expect(microphoneError(new DOMException("x", "NotFoundError")).kind).toBe("microphone_missing");
    expect(microphoneError(new DOMException("x", "NotReadableError")).kind).toBe("microphone_busy");
    expect(microphoneError("weird").kind).toBe("microphone_busy");
  });

  it("tells a network failure to reach Azure apart from Azure answering with an error", () => {
    expect(new VoiceError("azure_unreachable").message).toMatch(/Check your network/);
    expect(new VoiceError("azure_unreachable", { status: 503 }).message).toBe(
      "Azure couldn't start the audio right now. Try again in a moment.",
    );
  });

  it("quotes the service's detail when it refuses a session", () => {
    const error = new VoiceError("mint_refused", { problem: { detail: "agent 'bob' is not known" } });
    expect(describeError(error)).toBe("The voice service refused to start a session: agent 'bob' is not known");
    expect(new VoiceError("mint_refused").message).toBe("The voice service refused to start a session.");
  });

  it("keeps the service's problem document, status and code on the error", async () => {
    const { fetch } = scriptedFetch(problem(403, "forbidden"));
    const failure = mintSession({ agent: "elena", conversation_id: "cv_a.b" }, { fetch });
    await expect(failure).rejects.toMatchObject({
      kind: "forbidden",
      status: 403,
      code: "forbidden",
      problem: { detail: "forbidden detail" },
    });
  });

  it("treats a 201 without a key as a broken service answer", async () => {
    const { fetch } = scriptedFetch(new Response(JSON.stringify({ session_id: "vs_1" }), { status: 201 }));
    await expect(mintSession({ agent: "elena" }, { fetch })).rejects.toMatchObject({ kind: "service_unavailable" });
  });
});
