/** A minimal typed event emitter: `on` returns an unsubscribe function. */

/** Maps event names to the payload type their listeners receive. */
export type EventMap = Record<string, unknown>;

/** A listener for one event of an {@link EventMap}. */
export type Listener<T> = (payload: T) => void;

/** Typed publish/subscribe used by every stateful object of the library. */
export class Emitter<Events extends EventMap> {
  readonly #listeners = new Map<keyof Events, Set<Listener<never>>>();

  /** Subscribe to `event`; returns a function that unsubscribes. */
  on<K extends keyof Events>(event: K, listener: Listener<Events[K]>): () => void {
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener as Listener<never>);
    return () => this.off(event, listener);
  }

  /** Remove a listener added with {@link on}. */
  off<K extends keyof Events>(event: K, listener: Listener<Events[K]>): void {
    this.#listeners.get(event)?.delete(listener as Listener<never>);
  }

  /**
   * Call every listener of `event` with `payload`. A listener that throws is reported on
   * the console and does not stop the others (a UI bug must not break audio or memory).
   */
  protected emit<K extends keyof Events>(event: K, payload: Events[K]): void {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<Events[K]>)(payload);
      } catch (error) {
        console.error(`engram-voice: a "${String(event)}" listener threw`, error);
      }
    }
  }
}
