/**
 * The page's lifecycle events a {@link VoiceClient} follows: the page going away
 * (`pagehide`), being hidden (`visibilitychange`) and the network coming back (`online`).
 */

import type { VoiceClient } from "./client.js";

/** What to do when the page changes. */
export interface PageHandlers {
  /** The page is hidden (it may never come back): flush and beacon memory. */
  hidden(): void;
  /** The page is going away (`pagehide`, after {@link hidden}): end the call at the service. */
  leaving(): void;
  /** The browser is online again: retry memory now. */
  online(): void;
}

/**
 * Listen to the page with `handlers`; returns the functions that remove the listeners.
 * Outside a browser (no `window`/`document`) nothing is listened to.
 */
export function listenToPage(handlers: PageHandlers): (() => void)[] {
  const win = globalThis as Partial<Window & typeof globalThis>;
  if (typeof win.addEventListener !== "function" || typeof win.document === "undefined") return [];
  const doc = win.document;
  const onPageHide = (): void => {
    handlers.hidden();
    handlers.leaving();
  };
  const onVisibility = (): void => {
    if (doc.visibilityState === "hidden") handlers.hidden();
  };
  const onOnline = (): void => handlers.online();
  win.addEventListener("pagehide", onPageHide);
  doc.addEventListener("visibilitychange", onVisibility);
  win.addEventListener("online", onOnline);
  return [
    () => win.removeEventListener?.("pagehide", onPageHide),
    () => doc.removeEventListener("visibilitychange", onVisibility),
    () => win.removeEventListener?.("online", onOnline),
  ];
}
