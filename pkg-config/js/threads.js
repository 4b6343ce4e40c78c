// Whether the CPU backend can run threaded here: shared by the page (capabilities) and the
// engine (which module to instantiate).

/**
 * Why the threaded CPU module cannot run here (null when it can): it needs shared wasm memory,
 * which browsers give only to cross-origin-isolated pages (COOP/COEP headers).
 */
export function threadsUnavailable() {
  // Browsers hide SharedArrayBuffer on pages that are not isolated: that is the usual cause.
  if (globalThis.crossOriginIsolated !== true) {
    return 'the page is not cross-origin isolated (serve it with Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)';
  }
  if (typeof SharedArrayBuffer !== 'function') return 'this browser has no SharedArrayBuffer';
  return null;
}

/** Threads to start by default: the cores the browser reports, at most 8. */
export function defaultThreads() {
  return Math.max(1, Math.min(8, globalThis.navigator?.hardwareConcurrency || 1));
}
