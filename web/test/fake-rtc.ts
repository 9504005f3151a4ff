/** Fake WebRTC objects: just enough of RTCPeerConnection for the client's unit tests. */

export class FakeTrack {
  kind = "audio";
  enabled = true;
  stopped = false;
  stop(): void {
    this.stopped = true;
  }
}

export class FakeStream {
  readonly tracks = [new FakeTrack()];
  getAudioTracks(): FakeTrack[] {
    return this.tracks;
  }
  getTracks(): FakeTrack[] {
    return this.tracks;
  }
}

export class FakeChannel {
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: (() => void) | null = null;
  closed = false;
  constructor(readonly label: string) {}
  /** Deliver a server event as Azure would. */
  receive(event: object): void {
    this.onmessage?.({ data: JSON.stringify(event) });
  }
  close(): void {
    this.closed = true;
  }
  /** The far end closed the channel (the service or Azure ended the call). */
  remoteClose(): void {
    this.closed = true;
    this.onclose?.();
  }
}

/** A peer connection whose connection state the test drives (`connect()` / `fail()`). */
export class FakePeerConnection extends EventTarget {
  static last: FakePeerConnection | null = null;
  /** Calls in order, to check that the key is minted after the offer exists. */
  static log: string[] = [];
  readonly config: RTCConfiguration;
  readonly tracks: FakeTrack[] = [];
  /** Every data channel the client created, in order. */
  readonly channels: FakeChannel[] = [];
  connectionState: RTCPeerConnectionState = "new";
  signalingState: RTCSignalingState = "stable";
  iceGatheringState: RTCIceGatheringState = "new";
  localDescription: { type: string; sdp: string } | null = null;
  remoteDescription: { type: string; sdp: string } | null = null;
  ontrack: ((event: unknown) => void) | null = null;
  closed = false;
  /** Connect as soon as the answer is applied (default), as loopback ICE does. */
  autoConnect = true;
  /** Finish ICE gathering right after the local description (default); false: never. */
  static gatherIce = true;

  constructor(config: RTCConfiguration) {
    super();
    this.config = config;
    FakePeerConnection.last = this;
  }

  addTrack(track: FakeTrack): void {
    this.tracks.push(track);
  }

  createDataChannel(label: string): FakeChannel {
    if (this.localDescription !== null) FakePeerConnection.log.push(`late channel ${label}`);
    const channel = new FakeChannel(label);
    this.channels.push(channel);
    return channel;
  }

  /** The events channel the client kept: the one still open, else the last created. */
  get channel(): FakeChannel | null {
    return this.channels.find((c) => !c.closed) ?? this.channels.at(-1) ?? null;
  }

  /** The channel labelled `label`. */
  channelNamed(label: string): FakeChannel | undefined {
    return this.channels.find((c) => c.label === label);
  }

  async createOffer(): Promise<{ type: string; sdp: string }> {
    FakePeerConnection.log.push(`createOffer with ${this.channels.map((c) => c.label).join("+")}`);
    return { type: "offer", sdp: "v=0 fake-offer" };
  }

  async setLocalDescription(description: { type: string; sdp: string }): Promise<void> {
    this.localDescription = description;
    this.#signaling("have-local-offer");
    if (!FakePeerConnection.gatherIce) return;
    queueMicrotask(() => {
      this.iceGatheringState = "complete";
      this.dispatchEvent(new Event("icegatheringstatechange"));
    });
  }

  async setRemoteDescription(description: { type: string; sdp: string }): Promise<void> {
    FakePeerConnection.log.push("setRemoteDescription");
    this.remoteDescription = description;
    this.#signaling("stable");
    if (this.autoConnect) queueMicrotask(() => this.connect());
  }

  connect(): void {
    this.setConnectionState("connected");
  }

  setConnectionState(state: RTCPeerConnectionState): void {
    if (this.closed) return;
    this.connectionState = state;
    this.dispatchEvent(new Event("connectionstatechange"));
  }

  async getStats(): Promise<Map<string, object>> {
    return new Map<string, object>([
      ["in", { type: "inbound-rtp", kind: "audio", packetsReceived: 120, bytesReceived: 9600 }],
      ["out", { type: "outbound-rtp", kind: "audio", packetsSent: 118, bytesSent: 9440 }],
      ["video", { type: "inbound-rtp", kind: "video", packetsReceived: 5 }],
    ]);
  }

  close(): void {
    FakePeerConnection.log.push("pc.close");
    this.closed = true;
    this.connectionState = "closed";
  }

  #signaling(state: RTCSignalingState): void {
    this.signalingState = state;
    this.dispatchEvent(new Event("signalingstatechange"));
  }
}
