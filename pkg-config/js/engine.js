// The part of nextscale that runs next to the wasm module: in the Worker by default, or on
// the page when `worker: false`. It turns wasm rejections into plain { name, message } errors.
import init, { Generator as WasmGenerator } from './nextscale_wasm.js';

let ready = null;
/** Instantiates the wasm module once. */
export function initWasm() {
  if (!ready) ready = init({ module_or_path: new URL('./nextscale_wasm_bg.wasm', import.meta.url) });
  return ready;
}

export class Engine {
  constructor() {
    this.model = null;
    this.crashed = false;
  }

  dispose() {
    this.model?.free();
    this.model = null;
  }

  async load(bytes, backend) {
    await initWasm();
    this.model = await guard(this, () => WasmGenerator.fromBytes(bytes, backend));
    return { backend: this.model.backend, info: this.model.info };
  }

  async generate(options, onScale, signal) {
    if (!this.model) throw new Error('no model is loaded');
    const opts = { ...options };
    if (onScale) opts.onScale = onScale;
    if (signal) opts.signal = signal;
    return guard(this, () => this.model.generate(opts));
  }
}

// A wasm trap (a bug, never bad input) leaves the instance unusable: say so plainly.
async function guard(engine, f) {
  if (engine.crashed) throw new Error('the model crashed earlier; load it again');
  try {
    return await f();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) {
      engine.crashed = true;
      const err = new Error(`the model crashed (${e.message}); load it again`);
      err.name = 'RuntimeError';
      throw err;
    }
    throw e;
  }
}
