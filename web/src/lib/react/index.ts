/**
 * The React entry of engram-voice's browser client (`@engram/voice-client/react`): one
 * hook, {@link useVoiceSession}, over the framework-agnostic {@link VoiceClient}. React
 * (18 or newer) is a peer dependency of this entry only; the core entry never imports it.
 *
 * ```tsx
 * const voice = useVoiceSession({ agent: "elena", getAuthToken });
 * <button onClick={() => voice.connect()}>Talk</button>
 * ```
 */

export { type UseVoiceSessionOptions, type VoiceSession, type VoiceSessionSnapshot, useVoiceSession } from "./use-voice-session.js";
