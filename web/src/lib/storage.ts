/** The part of the Web Storage API the outbox uses, and a safe way to find local storage. */

/** `localStorage`-compatible key/value storage. */
export interface StorageLike {
  readonly length: number;
  key(index: number): string | null;
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/**
 * The page's `localStorage`, or null where it is missing or blocked (some privacy modes
 * throw on access): the outbox then keeps turns in memory only.
 */
export function defaultStorage(): StorageLike | null {
  try {
    const storage = (globalThis as { localStorage?: StorageLike }).localStorage;
    return storage ?? null;
  } catch {
    return null;
  }
}

/** An in-memory {@link StorageLike} (tests, or hosts that must not persist anything). */
export class MemoryStorage implements StorageLike {
  readonly #data = new Map<string, string>();

  get length(): number {
    return this.#data.size;
  }

  key(index: number): string | null {
    return [...this.#data.keys()][index] ?? null;
  }

  getItem(key: string): string | null {
    return this.#data.get(key) ?? null;
  }

  setItem(key: string, value: string): void {
    this.#data.set(key, String(value));
  }

  removeItem(key: string): void {
    this.#data.delete(key);
  }
}
