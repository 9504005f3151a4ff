import { type UseVoiceSessionOptions, useVoiceSession } from "@engram/voice-client/react";

export function VoiceChat(props: UseVoiceSessionOptions) {
  const voice = useVoiceSession(props); // e.g. { agent: "elena", baseUrl, getAuthToken }
  return (
    <section aria-label={`Voice chat with ${props.agent}`}>
      <button onClick={() => (voice.active ? voice.hangUp() : voice.connect())}>{voice.active ? "Hang up" : "Talk"}</button>
      <button onClick={voice.toggleMuted} disabled={!voice.active}>{voice.muted ? "Unmute" : "Mute"}</button>
      <p role="status">{voice.error?.message ?? voice.state} · memory {voice.memory.status}</p>
      <ol>{voice.transcript.map((turn) => <li key={turn.id}>{turn.role}: {turn.text}</li>)}</ol>
    </section>
  );
}
