/**
 * Which data channel carries server events, per upstream, and the rule the client follows.
 *
 * Each upstream reads events from a client-created channel with its own label: Azure OpenAI
 * `oai-events`, Voice Live `voice-live-events`. The channel has to exist before the offer
 * (its SCTP m-line is negotiated there), but which upstream serves an agent is known only
 * from the service's answer. Data channels do not show in the SDP one by one: every channel
 * rides the one SCTP m-line and is opened in-band (DCEP) once SCTP is up, which is after the
 * answer. So the client creates one channel per label before the offer (the offer is the
 * same as with one) and, as soon as the answer names the upstream, closes the other one
 * before it was ever opened on the wire. An upstream that still sees it ignores a label it
 * does not know (the emulator records it in `ignored_channels`).
 */

import type { Upstream } from "./types.js";

/** The events channel's label for each upstream. */
export const EVENT_CHANNELS: Readonly<Record<"voice-live" | "azure-openai", string>> = {
  "azure-openai": "oai-events",
  "voice-live": "voice-live-events",
};

/** Every label, in the order the channels are created. */
export const ALL_EVENT_CHANNELS: readonly string[] = Object.values(EVENT_CHANNELS);

/** The events channel label of `upstream`, or null for an upstream this client does not know. */
export function eventChannelFor(upstream: Upstream): string | null {
  return Object.hasOwn(EVENT_CHANNELS, upstream) ? EVENT_CHANNELS[upstream as keyof typeof EVENT_CHANNELS] : null;
}
