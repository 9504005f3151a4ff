/** The retry policy of the memory outbox, written once. */

/** How retries are spaced. */
export interface BackoffPolicy {
  /** First retry delay before jitter (default 1000 ms). */
  baseMs: number;
  /** Longest delay between two attempts, before jitter (default 30000 ms). */
  maxMs: number;
  /** Longest `Retry-After` the outbox honours (default 300000 ms); longer values are capped. */
  maxRetryAfterMs: number;
}

/** Defaults: 1 s, 2 s, 4 s … capped at 30 s, each with "equal jitter". */
export const defaultBackoff: BackoffPolicy = { baseMs: 1000, maxMs: 30_000, maxRetryAfterMs: 300_000 };

/**
 * Delay before retry number `attempt` (1 for the first retry): exponential, capped, with
 * equal jitter (half fixed, half random) so many tabs do not retry in lockstep. A server's
 * `Retry-After` is a floor: the outbox never retries earlier than it asked.
 */
export function retryDelayMs(
  attempt: number,
  policy: BackoffPolicy,
  retryAfterMs: number | undefined,
  random: () => number = Math.random,
): number {
  const exponential = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.max(0, attempt - 1));
  const jittered = exponential / 2 + random() * (exponential / 2);
  if (retryAfterMs === undefined) return Math.round(jittered);
  return Math.round(Math.max(Math.min(retryAfterMs, policy.maxRetryAfterMs), jittered));
}

/** Statuses worth retrying: timeouts, throttling and server-side failures. */
export function isRetryableStatus(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}
