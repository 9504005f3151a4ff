/**
 * The two ways a call is set up, after the offer exists (ICE gathered) and before the
 * answer is applied:
 * - default (`flow: "call"`): the service relays the offer to the agent's upstream
 *   (`POST /realtime/calls`) and answers with the SDP answer, the call's details and the
 *   memory grant; the events channel the upstream does not use is closed;
 * - browser-direct (`flow: "mint"`, Azure OpenAI only): a single-use key is minted
 *   (`POST /realtime/sessions`) right before the offer goes to Azure itself.
 */

import { createCall, endCall, mintSession } from "./api.js";
import { type Call, Cancelled, callInfoFromCall, callInfoFromSession } from "./call.js";
import type { CallInfo, ConnectOptions, VoiceClientOptions } from "./call-types.js";
import { exchangeSdpWithAzure } from "./direct.js";
import { globalFetch } from "./http.js";
import type { MemoryGrantWire } from "./types.js";
import { eventChannelFor } from "./upstreams.js";

/** What a setup flow needs from the client. */
export interface SetupContext {
  options: VoiceClientOptions;
  /** Whether the call is still the client's live attempt. */
  isCurrent(): boolean;
  /** The previous call's hang-up at the service, still on its way or done. */
  previousHangUp(): Promise<void>;
  /** Record a hang-up at the service started outside the client's teardown. */
  ending(hangUp: Promise<void>): void;
  /** The service's answer arrived: record the call's details and open its memory lane. */
  started(info: CallInfo, grant: MemoryGrantWire | null): void;
}

/** Default flow: the service relays the offer to the agent's upstream; returns the answer. */
export async function setUpAtService(call: Call, connect: ConnectOptions, offer: string, context: SetupContext): Promise<string> {
  const { options } = context;
  const request = { agent: connect.agent, sdp_offer: offer, ...(connect.conversationId ? { conversation_id: connect.conversationId } : {}) };
  const getAuthToken = options.getAuthToken;
  // A previous call's hang-up still on its way would count against the user's call limit.
  await context.previousHangUp();
  if (!context.isCurrent()) throw new Cancelled();
  const created = await createCall(request, {
    ...options,
    getAuthToken: async () => {
      const token = await getAuthToken?.();
      call.authToken = token ?? null;
      return token;
    },
  });
  if (!context.isCurrent()) {
    // Hung up while the service was setting the call up: end it there too.
    context.ending(endCall(created.call_id, options).then(() => undefined));
    throw new Cancelled();
  }
  context.started(callInfoFromCall(created), created.memory ?? null);
  const label = eventChannelFor(created.upstream);
  if (label !== null) call.keepChannel(label);
  return created.sdp_answer;
}

/** Browser-direct flow: mint a single-use key, then post the offer to Azure; returns the answer. */
export async function setUpDirect(connect: ConnectOptions, offer: string, context: SetupContext): Promise<string> {
  const { options } = context;
  // Mint as late as possible: the key is single-use and expires within a minute.
  const request = connect.conversationId ? { agent: connect.agent, conversation_id: connect.conversationId } : { agent: connect.agent };
  const session = await mintSession(request, options);
  if (!context.isCurrent()) throw new Cancelled();
  context.started(callInfoFromSession(session), session.memory ?? null);
  return exchangeSdpWithAzure(session, offer, options.fetch ?? globalFetch, options.sdpTimeoutMs ?? 15_000);
}
