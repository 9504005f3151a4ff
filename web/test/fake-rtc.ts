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
}

/** A peer connection whose connection state the test drives (`connect()` / `fail()`). */
export class FakePeerConnection extends EventTarget {
  static last: FakePeerConnection | null = null;
  /** Calls in order, to check that the key is minted after the offer exists. */
  static log: string[] = [];
  readonly config: RTCConfiguration;
  readonly tracks: FakeTrack[] = [];
  channel: FakeChannel | null = null;
  connectionState: RTCPeerConnectionState = "new";
  signalingState: RTCSignalingState = "stable";
  iceGatheringState: RTCIceGatheringState = "new";
  localDescription: { type: string; sdp: string } | null = null;
  remoteDescription: { type: string; sdp: string } | null = null;
  ontrack: ((event: unknown) => void) | null = null;
  closed = false;
  /** Connect as soon as the answer is applied (default), as loopback ICE does. */
  autoConnect = true;

  constructor(config: RTCConfiguration) {
    super();
    this.config = config;
    FakePeerConnection.last = this;
  }

  addTrack(track: FakeTrack): void {
    this.tracks.push(track);
  }

  createDataChannel(label: string): FakeChannel {
    this.channel = new FakeChannel(label);
    return this.channel;
  }

  async createOffer(): Promise<{ type: string; sdp: string }> {
    FakePeerConnection.log.push("createOffer");
    return { type: "offer", sdp: "v=0 fake-offer" };
  }

  async setLocalDescription(description: { type: string; sdp: string }): Promise<void> {
    this.localDescription = description;
    this.#signaling("have-local-offer");
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
    this.closed = true;
    this.connectionState = "closed";
  }

  #signaling(state: RTCSignalingState): void {
    this.signalingState = state;
    this.dispatchEvent(new Event("signalingstatechange"));
  }
}
