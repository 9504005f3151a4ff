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

import { type ServiceOptions, endCall } from "./api.js";
import { Call, Cancelled } from "./call.js";
import type {
  AudioStats,
  CallInfo,
  ConnectOptions,
  ConnectionChange,
  ConnectionState,
  EndReason,
  SpeakingState,
  VoiceClientEvents,
  VoiceClientOptions,
} from "./call-types.js";
import { type Clock, systemClock } from "./clock.js";
import { Emitter } from "./emitter.js";
import { VoiceError, microphoneError } from "./errors.js";
import { MemoryOutbox } from "./outbox.js";
import { listenToPage } from "./page.js";
import { iceGathered, readAudioStats, watchConnection } from "./peer.js";
import { effectOf, parseServerEvent } from "./server-events.js";
import { type SetupContext, setUpAtService, setUpDirect } from "./setup.js";
import { TranscriptAssembler } from "./transcript.js";
import type { MemoryGrantWire, TranscriptTurn } from "./types.js";
import { ALL_EVENT_CHANNELS, EVENT_CHANNELS } from "./upstreams.js";

export type {
  AudioStats,
  CallFlow,
  CallInfo,
  ConnectOptions,
  ConnectionChange,
  ConnectionState,
  EndReason,
  RtcEnvironment,
  SpeakingState,
  VoiceClientEvents,
  VoiceClientOptions,
} from "./call-types.js";
export type { ServiceOptions };

/** How far before `expires_at` a remote end still counts as the maximum duration. */
const MAX_DURATION_SLACK_MS = 5000;

/** Starts and ends voice calls with Engram agents; see the module comment for the flow. */
export class VoiceClient extends Emitter<VoiceClientEvents> {
  /** The memory outbox, or null when memory is off. */
  readonly memory: MemoryOutbox | null;
  readonly #options: VoiceClientOptions;
  readonly #clock: Clock;
  /** Removes the client's page and outbox listeners. */
  readonly #pageListeners: (() => void)[] = [];
  /** Whether the client created its outbox (and so disposes it). */
  readonly #ownsMemory: boolean;
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
    this.#ownsMemory = this.memory !== null && this.memory !== options.memory;
    const memory = this.memory;
    if (memory) {
      this.#pageListeners.push(memory.on("state", (state) => this.emit("memory", state)));
      // Let the caller subscribe first, then deliver what earlier pages left behind.
      queueMicrotask(() => memory.restore());
    }
    if (options.pageLifecycle !== false) {
      this.#pageListeners.push(
        ...listenToPage({
          hidden: () => {
            this.#call?.assembler.flush();
            this.memory?.beacon();
          },
          leaving: () => this.#leave(),
          online: () => this.memory?.retryNow(),
        }),
      );
    }
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
    const call = new Call(attempt, assembler, this.#clock);
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
    return pc ? readAudioStats(pc) : null;
  }

  /**
   * Hang up, stop listening to the page and to the outbox, and stop the outbox's timers
   * when the client created it. An outbox passed in (`options.memory`) belongs to the host
   * and keeps working, e.g. for the next client (a React component mounted again).
   */
  dispose(): void {
    this.hangUp();
    for (const remove of this.#pageListeners.splice(0)) remove();
    if (this.#ownsMemory) this.memory?.dispose();
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
    const connected = watchConnection(call, pc, {
      isCurrent: () => this.#isCurrent(call),
      connected: () => this.#setState("connected", call),
      reconnecting: () => this.#setState("reconnecting", call),
      lost: (error) => this.#fail(call, error),
      connectTimeoutMs: this.#options.connectTimeoutMs ?? 20_000,
      reconnectGraceMs: this.#options.reconnectGraceMs ?? 10_000,
    });
    connected.catch(() => undefined); // awaited below; this only marks an early failure as handled

    await pc.setLocalDescription(await pc.createOffer());
    await iceGathered(call, pc, this.#options.iceGatheringTimeoutMs ?? 1500);
    this.#check(call);

    const offer = pc.localDescription?.sdp ?? "";
    const setup: SetupContext = {
      options: this.#options,
      isCurrent: () => this.#isCurrent(call),
      previousHangUp: () => this.#ending,
      ending: (hangUp) => {
        this.#ending = hangUp;
      },
      started: (info, grant) => this.#started(call, info, grant),
    };
    const answer = flow === "call" ? await setUpAtService(call, options, offer, setup) : await setUpDirect(options, offer, setup);
    this.#check(call);
    await pc.setRemoteDescription({ type: "answer", sdp: answer });
    await connected;
    this.#check(call);
  }

  /** Record the call's details, open its memory lane and tell the UI. */
  #started(call: Call, info: CallInfo, grant: MemoryGrantWire | null): void {
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

  #onServerMessage(call: Call, data: unknown): void {
    if (!this.#isCurrent(call)) return;
    const event = parseServerEvent(data);
    if (event === null) return;
    this.emit("serverEvent", event);
    const effect = effectOf(event, this.#speaking);
    if (effect.kind === "speaking") this.#setSpeaking(effect.speaking);
    else if (effect.kind === "warning") this.emit("warning", effect.message);
    else call.assembler.handle(event);
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
    call.assembler.end();
    call.assembler.dispose();
    call.clearTimers();
    for (const track of call.microphone?.getTracks() ?? []) track.stop();
    for (const channel of call.channels) channel.onclose = null;
    if (this.#audio) {
      this.#audio.pause();
      this.#audio.srcObject = null;
    }
    for (const unsubscribe of call.unsubscribe.splice(0)) unsubscribe();
    this.#setSpeaking({ user: false, assistant: false });
    this.memory?.flush();
    const callId = call.info?.callId ?? null;
    if (callId === null || call.hungUp) {
      call.closePeer();
      return Promise.resolve();
    }
    call.hungUp = true;
    const ended = endCall(callId, this.#options).then(() => call.closePeer());
    this.#ending = ended;
    return ended;
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
}
