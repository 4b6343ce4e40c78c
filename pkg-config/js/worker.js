// nextscale's Web Worker: owns the wasm instance so the page never freezes.
// Protocol: { id, type: 'load' | 'generate' | 'cancel', ... } → { id, type: 'scale' | 'done' | 'error', ... }.
import { Engine } from './engine.js';

const engine = new Engine();
const running = new Map(); // id → AbortController

function fail(id, e) {
  self.postMessage({ id, type: 'error', name: e?.name || 'Error', message: e?.message ?? String(e) });
}

// The model file arrives as 'begin', 'chunk' …, 'load', handled strictly in order.
let loading = Promise.resolve();

self.onmessage = async (ev) => {
  const msg = ev.data;
  const { id } = msg;
  try {
    if (msg.type === 'begin') {
      engine.backend = msg.backend;
      engine.threads = msg.threads;
      loading = loading.then(() => engine.begin(msg.expected)).catch((e) => { engine.error = e; });
    } else if (msg.type === 'chunk') {
      loading = loading.then(() => engine.append(msg.bytes));
    } else if (msg.type === 'load') {
      const r = await (loading = loading.then(() => engine.load(msg.backend)));
      loading = Promise.resolve();
      self.postMessage({ id, type: 'done', result: r });
    } else if (msg.type === 'generate') {
      const ctl = new AbortController();
      running.set(id, ctl);
      const onScale = msg.wantScales
        ? (e) => self.postMessage({ id, type: 'scale', event: e }, e.rgba ? [e.rgba.buffer] : [])
        : undefined;
      try {
        const r = await engine.generate(msg.options, onScale, ctl.signal, msg.previews);
        self.postMessage({ id, type: 'done', result: r }, [r.rgba.buffer, r.tokens.buffer]);
      } finally {
        running.delete(id);
      }
    } else if (msg.type === 'cancel') {
      running.get(msg.target)?.abort();
    }
  } catch (e) {
    fail(id, e);
  }
};
