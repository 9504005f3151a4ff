/** Time and timers, injectable so tests control them (and never sleep). */

/** A handle returned by {@link Clock.setTimeout}. */
export type TimerHandle = unknown;

/** The time source and timer functions the library uses. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(callback: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

/** The platform clock, looked up at call time (so fake timers installed later apply). */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => globalThis.setTimeout(callback, ms),
  clearTimeout: (handle) => globalThis.clearTimeout(handle as ReturnType<typeof setTimeout>),
};
