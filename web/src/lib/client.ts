/**
 * The voice client: one object a page keeps for its lifetime, which runs at most one call
 * at a time.
 *
 * A call goes (default flow, `flow: "call"`, any agent and upstream): microphone → peer
 * connection with the events data channels and the SDP offer, ICE gathered → post the offer
 * to the service (`POST /realtime/calls`), which sets the call up with Azure (Voice Live or
 * Azure OpenAI) and answers with the SDP answer, the call's id, the agent's voice and the
 * memory grant → play the remote audio, read server events (either vocabulary), assemble
 * the transcript and hand final turns to the memory outbox. Hanging up asks the service
 * first (`DELETE /realtime/calls/{call_id}`), then closes the peer. The browser never holds
 * an Azure credential.
 *
 * The browser-direct flow (`flow: "mint"`, Azure OpenAI agents only) mints a single-use key
 * at the service (`POST /realtime/sessions`) right before posting the offer straight to
 * Azure (`POST {webrtc_url}`, `Authorization: Bearer ek_…`).
 *
 * Memory never blocks audio: the outbox works on its own timers and failures.
 */

import { type ServiceOptions, createCall, endCall, mintSession } from "./api";
import { type Clock, type TimerHandle, systemClock } from "./clock";
import { exchangeSdpWithAzure } from "./direct";
import { Emitter } from "./emitter";
import { VoiceError, microphoneError } from "./errors";
import { globalFetch } from "./http";
import { type MemoryState, MemoryOutbox, type OutboxOptions } from "./outbox";
import { type ServerEvent, TranscriptAssembler, type TranscriptOptions } from "./transcript";
import type { AgentId, MemoryGrantWire, TranscriptTurn, Upstream } from "./types";
import { ALL_EVENT_CHANNELS, EVENT_CHANNELS, eventChannelFor } from "./upstreams";

/**
 * Where a call is:
 * `idle` (none yet), `microphone` (asking for it), `connecting` (offer, mint, SDP exchange,
 * ICE), `connected` (audio flows), `reconnecting` (the network blipped; ICE is recovering),
 * `ended` (hung up), `failed` (see the `error` event).
 */
export type ConnectionState = "idle" | "microphone" | "connecting" | "connected" | "reconnecting" | "ended" | "failed";

/**
 * Why a call ended: `hangup` ({@link VoiceClient.hangUp}), `page_unload` (the page went
 * away), `max_duration` (the service ended it at its `expires_at`), `remote_closed` (the
 * service or Azure closed it before that).
 */
export type EndReason = "hangup" | "page_unload" | "max_duration" | "remote_closed";

/**
 * How a call is set up: `call` (default) through the service's `POST /realtime/calls`, for
 * every agent; `mint` browser-direct with a single-use key (Azure OpenAI agents only).
 */
export type CallFlow = "call" | "mint";

/** Who is speaking right now, from Azure's VAD and output-buffer events. */
export interface SpeakingState {
  user: boolean;
  assistant: boolean;
}

/** The current call, as far as the UI needs it. */
export interface CallInfo {
  /** The service's call id (`rc_…`); null in the browser-direct flow. */
  callId: string | null;
  sessionId: string;
  conversationId: string;
  /** `voice` is the name of the voice the agent speaks with (e.g. `en-US-Ava:DragonHDLatestNeural`). */
  agent: { id: string; name: string; voice: string };
  /** The Azure service carrying the audio: `voice-live` or `azure-openai`. */
  upstream: Upstream;
  /** Unix seconds when the service ends the call (its maximum duration); null browser-direct. */
  expiresAt: number | null;
  /** Whether the service granted memory for this call (turns are saved to the agent's memory). */
  memory: boolean;
}

/** Payload of the `connection` event. */
export interface ConnectionChange {
  state: ConnectionState;
  call: CallInfo | null;
  /** Set when `state` is `failed`. */
  error?: VoiceError;
  /** Set when `state` is `ended`. */
  reason?: EndReason;
}

/** Audio counters of the current call (from `RTCPeerConnection.getStats`). */
export interface AudioStats {
  inboundPackets: number;
  inboundBytes: number;
  outboundPackets: number;
  outboundBytes: number;
}

/** Events of a {@link VoiceClient}. */
export interface VoiceClientEvents extends Record<string, unknown> {
  connection: ConnectionChange;
  speaking: SpeakingState;
  /** One turn appeared or changed. */
  turn: TranscriptTurn;
  /** The whole transcript of the current call, in conversation order, after any change. */
  transcript: TranscriptTurn[];
  memory: MemoryState;
  muted: boolean;
  /** A call failed; the message is in plain words (see {@link describeError}). */
  error: VoiceError;
  /** Something worth a note (e.g. autoplay blocked, an Azure error event, why the service or Azure ended the call). */
  warning: string;
  /** Every event Azure sent on the data channel, for hosts that want more. */
  serverEvent: ServerEvent;
}

/** Browser APIs the client uses; injectable for tests and unusual hosts. */
export interface RtcEnvironment {
  RTCPeerConnection?: typeof RTCPeerConnection;
  mediaDevices?: Pick<MediaDevices, "getUserMedia">;
  /** Creates the element remote audio plays in (default `new Audio()`). */
  createAudio?: () => HTMLAudioElement;
}

/** Options of a {@link VoiceClient}. */
export interface VoiceClientOptions extends ServiceOptions {
  /** How calls are set up (default `call`: through the service, for every agent). */
  flow?: CallFlow;
  /** The memory outbox (created with defaults unless given), or false for no memory. */
  memory?: MemoryOutbox | OutboxOptions | false;
  /** Element that plays the agent's voice; one is created when absent. */
  audioElement?: HTMLAudioElement;
  /** Microphone constraints (default: echo cancellation, noise suppression, AGC). */
  audioConstraints?: MediaTrackConstraints;
  /** ICE servers for the peer connection (default: none, as Azure's samples do). */
  iceServers?: RTCIceServer[];
  /** Longest wait for local ICE candidates before sending the offer (default 1500 ms). */
  iceGatheringTimeoutMs?: number;
  /** Browser-direct flow: bound on the SDP exchange with Azure (default 15000 ms). */
  sdpTimeoutMs?: number;
  /** Bound from the SDP answer to an open media connection (default 20000 ms). */
  connectTimeoutMs?: number;
  /** How long a dropped connection may try to recover before the call fails (default 10000 ms). */
  reconnectGraceMs?: number;
  transcript?: TranscriptOptions;
  /**
   * Listen to `pagehide`/`visibilitychange`/`online` to beacon and retry memory, and to hang
   * up at the service (keepalive `DELETE`) when the page goes away (default true).
   */
  pageLifecycle?: boolean;
  rtc?: RtcEnvironment;
  clock?: Clock;
}

/** What to connect to. */
export interface ConnectOptions {
  agent: AgentId;
  /** Continue an earlier conversation of the same user (returned by a previous call). */
  conversationId?: string;
}

interface Call {
  attempt: number;
  info: CallInfo | null;
  pc: RTCPeerConnection | null;
  /** The events channels: one per upstream label until the answer names the upstream. */
  channels: RTCDataChannel[];
  /** The caller's bearer token from the call's setup, for the unload hang-up (memory only). */
  authToken: string | null;
  /** Whether the service was already asked to end the call. */
  hungUp: boolean;
  microphone: MediaStream | null;
  assembler: TranscriptAssembler;
  timers: Set<TimerHandle>;
  unsubscribe: (() => void)[];
}

class Cancelled extends Error {}

/** How far before `expires_at` a remote end still counts as the maximum duration. */
const MAX_DURATION_SLACK_MS = 5000;

/** Starts and ends voice calls with Engram agents; see the module comment for the flow. */
export class VoiceClient extends Emitter<VoiceClientEvents> {
  /** The memory outbox, or null when memory is off. */
  readonly memory: MemoryOutbox | null;
  readonly #options: VoiceClientOptions;
  readonly #clock: Clock;
  readonly #pageListeners: (() => void)[] = [];
  #state: ConnectionState = "idle";
  #speaking: SpeakingState = { user: false, assistant: false };
  #muted = false;
  #attempt = 0;
  #call: Call | null = null;
  /** The last hang-up at the service still on its way (resolves when answered or bounded). */
  #ending: Promise<void> = Promise.resolve();
  #audio: HTMLAudioElement | null;

  constructor(options: VoiceClientOptions = {}) {
    super();
    this.#options = options;
    this.#clock = options.clock ?? systemClock;
    this.#audio = options.audioElement ?? null;
    if (options.memory === false) this.memory = null;
    else if (options.memory instanceof MemoryOutbox) this.memory = options.memory;
    else this.memory = new MemoryOutbox({ baseUrl: options.baseUrl, fetch: options.fetch, clock: options.clock, ...options.memory });
    const memory = this.memory;
    if (memory) {
      memory.on("state", (state) => this.emit("memory", state));
      // Let the caller subscribe first, then deliver what earlier pages left behind.
      queueMicrotask(() => memory.restore());
    }
    if (options.pageLifecycle !== false) this.#listenToPage();
  }

  /** The connection state of the current (or last) call. */
  get state(): ConnectionState {
    return this.#state;
  }

  /** The current call, or null between calls. */
  get call(): CallInfo | null {
    return this.#call?.info ?? null;
  }

  /** Whether the microphone is muted. */
  get muted(): boolean {
    return this.#muted;
  }

  /** Who is speaking now. */
  get speaking(): SpeakingState {
    return { ...this.#speaking };
  }

  /** The transcript of the current (or last) call, in conversation order. */
  transcript(): TranscriptTurn[] {
    return this.#call?.assembler.turns() ?? [];
  }

  /**
   * Start a call with `options.agent`, hanging up any current call first. Resolves once
   * audio is connected (or when {@link hangUp} cancels the attempt); rejects with a
   * {@link VoiceError} whose message is fit to show as is.
   */
  async connect(options: ConnectOptions): Promise<void> {
    void this.hangUp();
    const attempt = ++this.#attempt;
    const assembler = new TranscriptAssembler({ clock: this.#clock, ...this.#options.transcript });
    const call: Call = {
      attempt,
      info: null,
      pc: null,
      channels: [],
      authToken: null,
      hungUp: false,
      microphone: null,
      assembler,
      timers: new Set(),
      unsubscribe: [],
    };
    this.#call = call;
    if (this.#muted) this.setMuted(false);
    this.#setSpeaking({ user: false, assistant: false });
    call.unsubscribe.push(
      assembler.on("turn", (turn) => {
        this.emit("turn", turn);
        this.emit("transcript", assembler.turns());
      }),
      assembler.on("commit", (turn) => this.#remember(call, turn)),
    );
    this.emit("transcript", []);
    try {
      await this.#run(call, options);
    } catch (error) {
      if (error instanceof Cancelled || !this.#isCurrent(call)) return;
      const failure = error instanceof VoiceError ? error : new VoiceError("azure_unreachable", { cause: error });
      this.#fail(call, failure);
      throw failure;
    }
  }

  /**
   * End the current call (or cancel one being set up). Safe to call at any time. The
   * microphone and the agent's voice stop at once; the service is asked to end the call
   * (`DELETE /realtime/calls/{call_id}`, bounded) and the peer connection closes after its
   * answer. The promise resolves then, and never rejects.
   */
  hangUp(): Promise<void> {
    return this.#hangUp("hangup");
  }

  /** Mute or unmute the microphone (the call stays up). */
  setMuted(muted: boolean): void {
    this.#muted = muted;
    for (const track of this.#call?.microphone?.getAudioTracks() ?? []) track.enabled = !muted;
    this.emit("muted", muted);
  }

  /** Audio packet and byte counters of the current call, or null when there is none. */
  async audioStats(): Promise<AudioStats | null> {
    const pc = this.#call?.pc;
    if (!pc) return null;
    const stats: AudioStats = { inboundPackets: 0, inboundBytes: 0, outboundPackets: 0, outboundBytes: 0 };
    const report = await pc.getStats();
    report.forEach((entry: { type?: string; kind?: string; packetsReceived?: number; bytesReceived?: number; packetsSent?: number; bytesSent?: number }) => {
      if (entry.kind !== "audio") return;
      if (entry.type === "inbound-rtp") {
        stats.inboundPackets += entry.packetsReceived ?? 0;
        stats.inboundBytes += entry.bytesReceived ?? 0;
      } else if (entry.type === "outbound-rtp") {
        stats.outboundPackets += entry.packetsSent ?? 0;
        stats.outboundBytes += entry.bytesSent ?? 0;
      }
    });
    return stats;
  }

  /** Hang up, stop listening to the page and stop the outbox's timers. */
  dispose(): void {
    this.hangUp();
    for (const remove of this.#pageListeners.splice(0)) remove();
    this.memory?.dispose();
  }

  #hangUp(reason: EndReason): Promise<void> {
    const call = this.#call;
    if (!call) return Promise.resolve();
    this.#attempt += 1;
    const closed = this.#teardown(call);
    if (this.#state !== "failed" && this.#state !== "idle" && this.#state !== "ended") this.#setState("ended", call, { reason });
    return closed;
  }

  async #run(call: Call, options: ConnectOptions): Promise<void> {
    const env = this.#options.rtc ?? {};
    const PeerConnection = env.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    const mediaDevices = env.mediaDevices ?? globalThis.navigator?.mediaDevices;
    if (typeof PeerConnection !== "function" || !mediaDevices?.getUserMedia) {
      throw new VoiceError("unsupported");
    }

    this.#setState("microphone", call);
    try {
      call.microphone = await mediaDevices.getUserMedia({
        audio: this.#options.audioConstraints ?? { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (cause) {
      throw microphoneError(cause);
    }
    this.#check(call);

    this.#setState("connecting", call);
    const pc = new PeerConnection({ iceServers: this.#options.iceServers ?? [] });
    call.pc = pc;
    for (const track of call.microphone.getAudioTracks()) pc.addTrack(track, call.microphone);
    pc.ontrack = (event) => this.#play(event);
    const flow = this.#options.flow ?? "call";
    // The channels must exist before the offer; see ./upstreams for why both, then one.
    for (const label of flow === "call" ? ALL_EVENT_CHANNELS : [EVENT_CHANNELS["azure-openai"]]) {
      const channel = pc.createDataChannel(label);
      call.channels.push(channel);
      channel.onmessage = (event: MessageEvent) => this.#onServerMessage(call, event.data);
      channel.onclose = () => this.#remoteClosed(call);
    }
    const connected = this.#watchConnection(call, pc);
    connected.catch(() => undefined); // awaited below; this only marks an early failure as handled

    await pc.setLocalDescription(await pc.createOffer());
    await this.#iceGathered(call, pc);
    this.#check(call);

    const offer = pc.localDescription?.sdp ?? "";
    const answer = flow === "call" ? await this.#setUpAtService(call, options, offer) : await this.#setUpDirect(call, options, offer);
    this.#check(call);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    await connected;
    this.#check(call);
  }

  /** Default flow: the service relays the offer to the agent's upstream; returns the answer. */
  async #setUpAtService(call: Call, options: ConnectOptions, offer: string): Promise<string> {
    const request = { agent: options.agent, sdp_offer: offer, ...(options.conversationId ? { conversation_id: options.conversationId } : {}) };
    const getAuthToken = this.#options.getAuthToken;
    // A previous call's hang-up still on its way would count against the user's call limit.
    await this.#ending;
    this.#check(call);
    const created = await createCall(request, {
      ...this.#options,
      getAuthToken: async () => {
        const token = await getAuthToken?.();
        call.authToken = token ?? null;
        return token;
      },
    });
    if (!this.#isCurrent(call)) {
      // Hung up while the service was setting the call up: end it there too.
      this.#ending = endCall(created.call_id, this.#options).then(() => undefined);
      throw new Cancelled();
    }
    this.#started(call, {
      info: {
        callId: created.call_id,
        sessionId: created.session_id,
        conversationId: created.conversation_id,
        agent: { id: created.agent.id, name: created.agent.name, voice: created.agent.voice },
        upstream: created.upstream,
        expiresAt: typeof created.expires_at === "number" ? created.expires_at : null,
        memory: false,
      },
      grant: created.memory ?? null,
    });
    const label = eventChannelFor(created.upstream);
    if (label !== null) {
      for (const channel of call.channels.filter((c) => c.label !== label)) {
        channel.onclose = null;
        channel.onmessage = null;
        channel.close();
      }
      call.channels = call.channels.filter((c) => c.label === label);
    }
    return created.sdp_answer;
  }

  /** Browser-direct flow: mint a single-use key, then post the offer to Azure; returns the answer. */
  async #setUpDirect(call: Call, options: ConnectOptions, offer: string): Promise<string> {
    // Mint as late as possible: the key is single-use and expires within a minute.
    const request = options.conversationId ? { agent: options.agent, conversation_id: options.conversationId } : { agent: options.agent };
    const session = await mintSession(request, this.#options);
    this.#check(call);
    this.#started(call, {
      info: {
        callId: null,
        sessionId: session.session_id,
        conversationId: session.conversation_id,
        agent: { ...session.agent },
        upstream: "azure-openai",
        expiresAt: null,
        memory: false,
      },
      grant: session.memory ?? null,
    });
    return exchangeSdpWithAzure(session, offer, this.#options.fetch ?? globalFetch, this.#options.sdpTimeoutMs ?? 15_000);
  }

  /** Record the call's details, open its memory lane and tell the UI. */
  #started(call: Call, { info, grant }: { info: CallInfo; grant: MemoryGrantWire | null }): void {
    info.memory = this.memory !== null && grant !== null;
    call.info = info;
    if (this.memory && grant) this.memory.open(MemoryOutbox.grantFrom(info.sessionId, grant));
    this.#setState("connecting", call); // again, now with the call's details
  }

  /** An events channel closed under a live call: the service or Azure ended it. */
  #remoteClosed(call: Call): void {
    if (!this.#isCurrent(call) || (this.#state !== "connected" && this.#state !== "reconnecting")) return;
    const expiresAt = call.info?.expiresAt ?? null;
    // The service ends a call at expires_at; allow for the two clocks disagreeing a little.
    const reason: EndReason = expiresAt !== null && this.#clock.now() >= expiresAt * 1000 - MAX_DURATION_SLACK_MS ? "max_duration" : "remote_closed";
    this.emit(
      "warning",
      reason === "max_duration" ? "The call reached its maximum length and was ended." : "The call was ended by the voice service or Azure.",
    );
    this.#attempt += 1;
    void this.#teardown(call);
    this.#setState("ended", call, { reason });
  }

  /** Whether `call` is the live attempt (not hung up, failed or replaced). */
  #isCurrent(call: Call): boolean {
    return this.#call === call && this.#attempt === call.attempt;
  }

  /** Throw {@link Cancelled} when `call` is no longer the live attempt. */
  #check(call: Call): void {
    if (!this.#isCurrent(call)) throw new Cancelled();
  }

  /** Resolve when ICE gathering completes or after the bound (host candidates come at once). */
  #iceGathered(call: Call, pc: RTCPeerConnection): Promise<void> {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        pc.removeEventListener("icegatheringstatechange", onChange);
        this.#clearTimer(call, timer);
        resolve();
      };
      const onChange = (): void => {
        if (pc.iceGatheringState === "complete") done();
      };
      pc.addEventListener("icegatheringstatechange", onChange);
      const timer = this.#timer(call, done, this.#options.iceGatheringTimeoutMs ?? 1500);
    });
  }

  /** Follow the peer connection; the promise settles on the first connect (or failure). */
  #watchConnection(call: Call, pc: RTCPeerConnection): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let everConnected = false;
      let grace: TimerHandle | null = null;
      let deadline: TimerHandle | null = null;
      const armDeadline = (): void => {
        deadline = this.#timer(
          call,
          () => reject(new VoiceError("azure_unreachable", { code: "ice_timeout" })),
          this.#options.connectTimeoutMs ?? 20_000,
        );
      };
      pc.addEventListener("signalingstatechange", () => {
        if (pc.signalingState === "stable" && deadline === null && !everConnected) armDeadline();
      });
      pc.addEventListener("connectionstatechange", () => {
        if (!this.#isCurrent(call)) return;
        const state = pc.connectionState;
        if (state === "connected") {
          if (grace !== null) this.#clearTimer(call, grace);
          if (deadline !== null) this.#clearTimer(call, deadline);
          grace = null;
          everConnected = true;
          this.#setState("connected", call);
          resolve();
        } else if (state === "disconnected" && everConnected) {
          this.#setState("reconnecting", call);
          grace ??= this.#timer(
            call,
            () => this.#fail(call, new VoiceError("connection_lost", { code: "ice_disconnected" })),
            this.#options.reconnectGraceMs ?? 10_000,
          );
        } else if (state === "failed") {
          if (everConnected) this.#fail(call, new VoiceError("connection_lost", { code: "ice_failed" }));
          else reject(new VoiceError("azure_unreachable", { code: "ice_failed" }));
        }
      });
    });
  }

  #onServerMessage(call: Call, data: unknown): void {
    if (!this.#isCurrent(call) || typeof data !== "string") return;
    let event: ServerEvent;
    try {
      event = JSON.parse(data) as ServerEvent;
    } catch {
      return;
    }
    if (typeof event?.type !== "string") return;
    this.emit("serverEvent", event);
    switch (event.type) {
      case "input_audio_buffer.speech_started":
        this.#setSpeaking({ ...this.#speaking, user: true });
        return;
      case "input_audio_buffer.speech_stopped":
        this.#setSpeaking({ ...this.#speaking, user: false });
        return;
      case "output_audio_buffer.started":
        this.#setSpeaking({ ...this.#speaking, assistant: true });
        return;
      case "output_audio_buffer.stopped":
      case "output_audio_buffer.cleared":
        this.#setSpeaking({ ...this.#speaking, assistant: false });
        return;
      case "error": {
        const detail = (event["error"] as { message?: string } | undefined)?.message;
        this.emit("warning", `Azure reported an error: ${detail ?? "unknown"}`);
        return;
      }
      default:
        call.assembler.handle(event);
    }
  }

  #play(event: RTCTrackEvent): void {
    if (event.track.kind !== "audio") return;
    const audio = (this.#audio ??= (this.#options.rtc?.createAudio ?? (() => new Audio()))());
    audio.autoplay = true;
    audio.srcObject = event.streams[0] ?? new MediaStream([event.track]);
    audio.play().catch(() => this.emit("warning", "The browser blocked audio playback; click the page to hear the agent."));
  }

  #remember(call: Call, turn: TranscriptTurn): void {
    if (!this.memory || !call.info) return;
    const message = turn.at ? { id: turn.id, role: turn.role, text: turn.text, at: turn.at } : { id: turn.id, role: turn.role, text: turn.text };
    this.memory.add(call.info.sessionId, message);
  }

  #fail(call: Call, error: VoiceError): void {
    if (!this.#isCurrent(call)) return;
    this.#attempt += 1;
    void this.#teardown(call);
    this.#setState("failed", call, { error });
    this.emit("error", error);
  }

  /**
   * Release everything of `call`; final turns go to memory first. The microphone and the
   * agent's voice stop at once; when the service holds the call, it is asked to end it and
   * the peer closes after its answer (bounded), so the service sees a hang-up rather than
   * its upstream dropping. Resolves once the peer is closed.
   */
  #teardown(call: Call): Promise<void> {
    call.assembler.flush();
    call.assembler.dispose();
    for (const timer of call.timers) this.#clock.clearTimeout(timer);
    call.timers.clear();
    for (const track of call.microphone?.getTracks() ?? []) track.stop();
    for (const channel of call.channels) channel.onclose = null;
    if (this.#audio) {
      this.#audio.pause();
      this.#audio.srcObject = null;
    }
    for (const unsubscribe of call.unsubscribe.splice(0)) unsubscribe();
    this.#setSpeaking({ user: false, assistant: false });
    this.memory?.flush();
    const closePeer = (): void => {
      try {
        for (const channel of call.channels) channel.close();
        call.pc?.close();
      } catch {
        // already closed
      }
    };
    const callId = call.info?.callId ?? null;
    if (callId === null || call.hungUp) {
      closePeer();
      return Promise.resolve();
    }
    call.hungUp = true;
    const ended = endCall(callId, this.#options).then(closePeer);
    this.#ending = ended;
    return ended;
  }

  #timer(call: Call, callback: () => void, ms: number): TimerHandle {
    const handle = this.#clock.setTimeout(() => {
      call.timers.delete(handle);
      callback();
    }, ms);
    call.timers.add(handle);
    return handle;
  }

  #clearTimer(call: Call, handle: TimerHandle): void {
    this.#clock.clearTimeout(handle);
    call.timers.delete(handle);
  }

  #setState(state: ConnectionState, call: Call, extra: { error?: VoiceError; reason?: EndReason } = {}): void {
    this.#state = state;
    const change: ConnectionChange = { state, call: call.info, ...extra };
    this.emit("connection", change);
  }

  #setSpeaking(next: SpeakingState): void {
    if (next.user === this.#speaking.user && next.assistant === this.#speaking.assistant) return;
    this.#speaking = next;
    this.emit("speaking", { ...next });
  }

  /**
   * The page is going away: hang up at the service with a keepalive `DELETE` (it outlives
   * the page; started synchronously with the token of the call's setup), then end locally.
   */
  #leave(): void {
    const call = this.#call;
    const callId = call?.info?.callId ?? null;
    if (!call || callId === null || call.hungUp || !this.#isCurrent(call)) return;
    call.hungUp = true;
    void endCall(callId, this.#options, { keepalive: true, token: call.authToken });
    void this.#hangUp("page_unload");
  }

  #listenToPage(): void {
    const win = globalThis as Partial<Window & typeof globalThis>;
    if (typeof win.addEventListener !== "function" || typeof win.document === "undefined") return;
    const doc = win.document;
    const onHide = (): void => {
      this.#call?.assembler.flush();
      this.memory?.beacon();
    };
    const onPageHide = (): void => {
      onHide();
      this.#leave();
    };
    const onVisibility = (): void => {
      if (doc.visibilityState === "hidden") onHide();
    };
    const onOnline = (): void => this.memory?.retryNow();
    win.addEventListener("pagehide", onPageHide);
    doc.addEventListener("visibilitychange", onVisibility);
    win.addEventListener("online", onOnline);
    this.#pageListeners.push(
      () => win.removeEventListener?.("pagehide", onPageHide),
      () => doc.removeEventListener("visibilitychange", onVisibility),
      () => win.removeEventListener?.("online", onOnline),
    );
  }
}
