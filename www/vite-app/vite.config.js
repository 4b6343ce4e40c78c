// What a Vite app needs for nextscale (no plugin): ES module workers, a build target with
// top-level await, and the package left out of dependency pre-bundling so that its
// `new URL('…wasm', import.meta.url)` and worker URLs keep pointing at its own files.
export default {
  // Relative URLs, so the built app runs from any folder (the tests serve it under /iso/ too).
  base: './',
  build: { target: 'esnext' },
  worker: { format: 'es' },
  optimizeDeps: { exclude: ['nextscale'] },
};
