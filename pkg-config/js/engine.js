// The part of nextscale that runs next to the wasm module: in the Worker by default, or on
// the page when `worker: false`. It turns wasm rejections into plain { name, message } errors.
import init, { Generator as WasmGenerator, PackBuffer as WasmPackBuffer } from './nextscale_wasm.js';
import { defaultThreads, threadsUnavailable } from './threads.js';

let ready = null;
let instances = 0;
// The glue as a file of its own (bundlers copy it), imported again for a fresh instance.
const GLUE = new URL('./nextscale_wasm.js', import.meta.url);
// The threaded CPU module (a rayon pool over Web Workers sharing its memory); CPU only.
const THREADED_GLUE = new URL('./nextscale_wasm_threads.js', import.meta.url);
// wasm-bindgen-rayon's worker helpers, named here so that bundlers emit them too; the glue
// imports them from this URL (scripts/wasm-threads-glue.mjs).
const THREAD_HELPERS = new URL('./nextscale_threads_helpers.js', import.meta.url);
const THREADED_WASM = new URL('./nextscale_wasm_threads_bg.wasm', import.meta.url);

/**
 * Instantiates the wasm module once, and again after a trap: a trapped instance may hold a
 * broken heap, so the next load gets a fresh copy of the module (its glue imported anew).
 * For the CPU backend with `threads` > 1 (default: the cores) on a cross-origin-isolated page
 * it is the threaded module; resolves to { m, threads, threadsReason }.
 */
export function initWasm(backend = 'auto', threads = undefined) {
  if (!ready) {
    const k = instances++;
    const want = threads ?? defaultThreads();
    // The pool's threads block on shared memory, which a page's main thread may not do.
    const inWorker = typeof WorkerGlobalScope !== 'undefined' && globalThis instanceof WorkerGlobalScope;
    const why = backend !== 'cpu' ? 'threads run on the CPU backend only'
      : want <= 1 ? 'one thread was asked for'
        : !inWorker ? 'threads need the Web Worker (worker: false runs the model on the page\'s thread)'
          : threadsUnavailable();
    ready = (why === null ? initThreaded(want, k) : Promise.reject(new Error(why)))
      .catch((e) => initSingle(k).then((m) => ({ m, threads: 1, threadsReason: e.message })));
  }
  return ready;
}

/** Instance `k` of the threaded module with a pool of `n` threads. */
async function initThreaded(n, k) {
  const url = `${THREADED_GLUE.href}?helpers=${encodeURIComponent(THREAD_HELPERS.href)}${k === 0 ? '' : `&instance=${k}`}`;
  const m = await import(/* @vite-ignore */ /* webpackIgnore: true */ url);
  await m.default({ module_or_path: THREADED_WASM });
  await m.initThreadPool(n);
  return { m, threads: n, threadsReason: null };
}

/** Instance `k` of the single-threaded module (the first is the one imported above). */
function initSingle(k) {
  const glue = k === 0
    ? Promise.resolve({ default: init, Generator: WasmGenerator, PackBuffer: WasmPackBuffer })
    : import(/* @vite-ignore */ /* webpackIgnore: true */ `${GLUE.href}?instance=${k}`).catch((e) => {
      throw new Error(`the model crashed and a fresh copy of the module cannot be loaded (${e.message}); reload the page`);
    });
  return glue.then(async (m) => {
    await m.default({ module_or_path: new URL('./nextscale_wasm_bg.wasm', import.meta.url) });
    return m;
  });
}

/** How many wasm instances this page (or worker) has created: a new one follows each trap. */
export function wasmInstances() {
  return instances;
}

export class Engine {
  /** `backend` and `threads` choose the module (see `initWasm`). */
  constructor(backend = 'auto', threads = undefined) {
    this.model = null;
    this.crashed = false;
    this.backend = backend;
    this.threads = threads;
  }

  dispose() {
    this.buffer?.free();
    this.buffer = null;
    this.model?.free();
    this.model = null;
  }

  /**
   * Starts receiving a model file of `expected` bytes (0: unknown) into wasm memory, in the
   * module for the engine's backend (the threaded one for 'cpu' where it can run).
   */
  async begin(expected) {
    const { m } = await initWasm(this.backend, this.threads);
    this.buffer?.free();
    this.buffer = null;
    this.error = null;
    this.buffer = await guard(this, async () => new m.PackBuffer(expected || 0));
  }

  /** Copies one piece of the file into wasm memory (a failure is reported by `load`). */
  append(chunk) {
    if (this.error) return;
    try {
      if (!this.buffer) throw new Error('no model file is being received');
      this.buffer.append(chunk);
    } catch (e) {
      this.error = e;
    }
  }

  /** Builds the model from the file received (the buffer is consumed). */
  async load(backend) {
    const { m, threads, threadsReason } = await initWasm(this.backend, this.threads);
    if (this.error) {
      const e = this.error;
      this.dispose();
      throw e instanceof WebAssembly.RuntimeError ? crashed(this, e) : e;
    }
    const buffer = this.buffer;
    this.buffer = null;
    if (!buffer) throw new Error('no model file was received');
    this.model = await guard(this, () => m.Generator.fromBuffer(buffer, backend));
    return { backend: this.model.backend, info: { ...this.model.info, threads, threadsReason } };
  }


  async generate(options, onScale, signal, previews = true) {
    if (!this.model) throw new Error('no model is loaded');
    return guard(this, () => this.model.generate(options, onScale ?? null, signal ?? null, previews));
  }
}

// A wasm trap (a bug, never bad input) leaves the instance unusable: say so plainly.
async function guard(engine, f) {
  if (engine.crashed) throw new Error('the model crashed earlier; load it again');
  try {
    return await f();
  } catch (e) {
    if (e instanceof WebAssembly.RuntimeError) throw crashed(engine, e);
    throw e;
  }
}

function crashed(engine, e) {
  engine.crashed = true;
  ready = null; // the next load instantiates a fresh module
  const err = new Error(`the model crashed (${e.message}); load it again`);
  err.name = 'RuntimeError';
  return err;
}
