/** Wire types of the engram-voice HTTP API and of the turns this library produces. */

/** The agents the service knows today; any other id is passed through as a string. */
export type AgentId = "elena" | "marcus" | "sage" | (string & {});

/** Who spoke a transcript turn. */
export type Role = "user" | "assistant";

/** `POST /realtime/sessions` request body (browser-direct flow, Azure OpenAI only). */
export interface CreateSessionRequest {
  agent: AgentId;
  conversation_id?: string;
}

/** The memory grant returned with a session: where and with what to post transcripts. */
export interface MemoryGrantWire {
  enrich_url: string;
  token: string;
  expires_at: number;
}

/** `POST /realtime/sessions` 201 answer. */
export interface SessionCreated {
  session_id: string;
  conversation_id: string;
  agent: { id: string; name: string; voice: string };
  client_secret: { value: string; expires_at: number };
  webrtc_url: string;
  deployment: string;
  memory?: MemoryGrantWire | null;
}

/** Which Azure service carries a call's audio (the agent's upstream in the service's catalog). */
export type Upstream = "voice-live" | "azure-openai" | (string & {});

/** `POST /realtime/calls` request body: the browser's complete SDP offer (ICE gathered). */
export interface CreateCallRequest {
  agent: AgentId;
  sdp_offer: string;
  conversation_id?: string;
}

/** `POST /realtime/calls` 201 answer: everything the call needs, and no Azure credential. */
export interface CallCreated {
  /** The service's id of the call (`rc_…`); `DELETE /realtime/calls/{call_id}` hangs it up. */
  call_id: string;
  /** The memory session id (`vs_…`), as minting gives. */
  session_id: string;
  conversation_id: string;
  /** `voice` is the voice name the agent speaks with on this upstream. */
  agent: { id: string; name: string; voice: string };
  upstream: Upstream;
  sdp_answer: string;
  /** Unix seconds: when the service ends the call (its maximum duration). */
  expires_at: number;
  memory?: MemoryGrantWire | null;
}

/** An RFC 9457 problem document as the service sends it. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  code?: string;
  errors?: { field?: string; message?: string }[];
}

/** One message of `POST /memory/enrich`; `id` is the Azure conversation item id. */
export interface EnrichMessage {
  id: string;
  role: Role;
  text: string;
  /** When the turn was completed, ISO 8601 (UTC). */
  at?: string;
}

/** `POST /memory/enrich` request body. */
export interface EnrichRequest {
  session_id: string;
  messages: EnrichMessage[];
  /** Only in `text/plain` beacons, which cannot carry an Authorization header. */
  token?: string;
}

/** `POST /memory/enrich` 202 answer. */
export interface EnrichAccepted {
  accepted: number;
  duplicates: number;
}

/** A transcript turn, as shown live and (once final) sent to memory. */
export interface TranscriptTurn {
  /** The conversation item id Azure gave the turn; also the memory message id. */
  id: string;
  role: Role;
  /** The text so far (partial while `final` is false). */
  text: string;
  /** True once Azure sent the completed transcript for the item. */
  final: boolean;
  /** True when Azure reported that it could not transcribe the item. */
  failed?: boolean;
  /**
   * True when the turn will never be completed: the response was cancelled (the user spoke
   * over the agent) or the call ended while it was still being spoken or transcribed. Its
   * `text` is what arrived until then; it stays `final: false` and is never sent to memory.
   */
  interrupted?: boolean;
  /** When the turn became final, ISO 8601. */
  at?: string;
}
