// nextscale's Web Worker: owns the wasm instance so the page never freezes.
// Protocol: { id, type: 'load' | 'generate' | 'cancel', ... } → { id, type: 'scale' | 'done' | 'error', ... }.
import { Engine } from './engine.js';

const engine = new Engine();
const running = new Map(); // id → AbortController

function fail(id, e) {
  self.postMessage({ id, type: 'error', name: e?.name || 'Error', message: e?.message ?? String(e) });
}

self.onmessage = async (ev) => {
  const msg = ev.data;
  const { id } = msg;
  try {
    if (msg.type === 'load') {
      const r = await engine.load(new Uint8Array(msg.bytes), msg.backend);
      self.postMessage({ id, type: 'done', result: r });
    } else if (msg.type === 'generate') {
      const ctl = new AbortController();
      running.set(id, ctl);
      const onScale = msg.wantScales
        ? (e) => self.postMessage({ id, type: 'scale', event: e }, [e.rgba.buffer])
        : undefined;
      try {
        const r = await engine.generate(msg.options, onScale, ctl.signal);
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
