// nextscale: next-scale-prediction (VAR) image generation in the browser, on WebGPU with a
// CPU fallback. The wasm module runs in a Web Worker by default.

import { defaultThreads, threadsUnavailable } from './threads.js';

const CACHE_NAME = 'nextscale-models-v2';
const BACKENDS = ['webgpu', 'cpu', 'auto'];
// `device` as transformers.js spells it ('wasm' is the CPU path); `backend` is the older name.
const DEVICES = { webgpu: 'webgpu', wasm: 'cpu', cpu: 'cpu', auto: 'auto' };
const LOAD_OPTIONS = ['device', 'backend', 'onProgress', 'progress_callback', 'cache', 'worker', 'signal', 'threads'];
/** Most images one generate() call makes (`numImages`). */
export const MAX_IMAGES = 64;

/** One generated (or edited) image. */
export class GeneratedImage {
  constructor(r) {
    this.width = r.width;
    this.height = r.height;
    this.rgba = r.rgba;
    this.tokens = r.tokens;
    this.timings = r.timings;
    this.backend = r.backend;
    /** `{ wasmBytes }`: the wasm module's memory after this image (it only grows: the peak so far). */
    this.memory = r.memory;
    if (r.seed !== undefined) this.seed = r.seed;
  }

  /** The pixels as ImageData (for a 2D canvas's putImageData). */
  toImageData() {
    return new ImageData(new Uint8ClampedArray(this.rgba), this.width, this.height);
  }

  /** The image encoded as a Blob (default PNG; 'image/jpeg' or 'image/webp' with a quality 0–1). */
  async toBlob(type = 'image/png', quality) {
    const c = new OffscreenCanvas(this.width, this.height);
    c.getContext('2d').putImageData(this.toImageData(), 0, 0);
    return c.convertToBlob({ type, quality });
  }
}
/** Largest weight file without a pack header (safetensors: f32 already, so the file and its
 * weights take twice its size in wasm memory while loading). Packs are checked by what they
 * become in memory instead (`packMemory`). */
/** wasm32's address space, less room for the module itself. */
export const WASM_MEMORY_BYTES = 2 ** 32 - 2 ** 27;
export const MAX_MODEL_BYTES = Math.floor(WASM_MEMORY_BYTES / 2);

const GB = (n) => `${(n / 1e9).toFixed(2)} GB`;
const prod = (s) => s.reduce((a, b) => a * b, 1);

/** Embedding tables and position tensors, which the CPU path keeps as f32. */
const EMBEDDINGS = /(^|\.)(class_emb|lvl_embed|pos_1LC|pos_start|embedding|word_embeddings|position_embeddings|token_type_embeddings|token_embedding|position_embedding)(\.|$)/;
/** Whether the CPU path keeps a matrix in its stored q8/q4 blocks (rows of whole blocks). */
const keptPacked = (t) => (t.storage === 'q8' || t.storage === 'q4') && t.shape.length >= 2
  && prod(t.shape.slice(1)) % 32 === 0 && !EMBEDDINGS.test(t.name);

/**
 * What a pack becomes in memory, from its header alone. Sampling needs the KV cache and the
 * last scale's activations (batch 2 for guidance), and the VQ-VAE decoder its full-resolution
 * feature maps. Per backend:
 * `cpu` — the file streams into wasm memory and its q8/q4 matrices stay there, packed (the
 * matmul dequantizes them tile by tile; a convolution's weight is f32 only while it runs);
 * other tensors become f32;
 * `webgpu` — the file in wasm memory while the weights upload; on the GPU the q8/q4 matrices
 * stay packed (their codes, and an f32 scale per block of 32), each layer's weight is rebuilt
 * as f32 while it runs (about three copies of the largest one, with the integer steps), the
 * other tensors are f32, plus the activations (each tensor within one storage buffer).
 */
export function packMemory(header, fileBytes = 0) {
  if (!header || !Array.isArray(header.tensors) || !header.var || !header.vae) {
    throw new TypeError('packMemory takes a pack header ({ var, vae, tensors })');
  }
  let weights = 0;
  let largest = 0;
  let dense = 0;
  let largestPacked = 0;
  let packedGpu = 0;
  for (const t of header.tensors) {
    const n = prod(t.shape);
    const b = n * 4;
    weights += b;
    largest = Math.max(largest, b);
    if (keptPacked(t)) {
      largestPacked = Math.max(largestPacked, b);
      packedGpu += (t.storage === 'q8' ? n : n / 2) + (n / 32) * 4;
    } else dense += b;
  }
  const v = header.var;
  const pn = v.patch_nums;
  const L = pn.reduce((a, p) => a + p * p, 0);
  const last = pn[pn.length - 1] ** 2;
  const C = v.embed_dim;
  const B = 2;
  const kv = v.depth * 2 * B * L * C * 4;
  const attn = B * v.num_heads * last * L * 4;
  const ffn = B * last * Math.round(C * v.mlp_ratio) * 4 + B * last * v.vocab_size * 4;
  const side = pn[pn.length - 1] * 2 ** (header.vae.ch_mult.length - 1);
  const decoder = 3 * header.vae.ch * header.vae.ch_mult[0] * side * side * 4;
  const activations = kv + attn + ffn + decoder;
  return {
    fileBytes,
    weightBytes: weights,
    largestTensorBytes: largest,
    activationBytes: activations,
    cpu: { wasmBytes: fileBytes + dense + largestPacked + activations, denseBytes: dense + largestPacked },
    webgpu: { wasmBytes: fileBytes + largest, gpuBytes: dense + packedGpu + 3 * largestPacked + activations },
  };
}

/** Whether a pack fits on `backend` ('cpu' | 'webgpu'); `reason` says what is needed and what there is. */
function packFits(mem, backend, limits) {
  const need = mem[backend];
  const parts = backend === 'cpu'
    ? `file with packed weights ${GB(mem.fileBytes)} + other weights as f32 ${GB(mem.cpu.denseBytes)} + activations ${GB(mem.activationBytes)}`
    : `file ${GB(mem.fileBytes)} + weights on the GPU ${GB(mem.webgpu.gpuBytes - mem.activationBytes)} + activations ${GB(mem.activationBytes)}`;
  if (backend === 'cpu' && need.wasmBytes > WASM_MEMORY_BYTES) {
    return { fits: false, reason: `this model needs about ${GB(need.wasmBytes)} of wasm memory on the CPU backend (${parts}); a page has at most ${GB(WASM_MEMORY_BYTES)}` };
  }
  if (backend === 'webgpu') {
    if (need.wasmBytes > WASM_MEMORY_BYTES) {
      return { fits: false, reason: `this model needs about ${GB(need.wasmBytes)} of wasm memory while loading (the file and its largest tensor); a page has at most ${GB(WASM_MEMORY_BYTES)}` };
    }
    const maxBuf = limits?.maxStorageBufferBindingSize;
    if (maxBuf && mem.largestTensorBytes > maxBuf) {
      return { fits: false, reason: `its largest tensor needs ${GB(mem.largestTensorBytes)} in one GPU buffer; this adapter allows ${GB(maxBuf)}` };
    }
  }
  return { fits: true, reason: null };
}

/** The pack header of `bytes` (a prefix of the file), or null when they are not a pack; throws on a damaged one. */
export function readPackHeader(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const magic = [0x4e, 0x58, 0x53, 0x50, 0x41, 0x43, 0x4b, 0x00]; // NXSPACK\0
  if (b.length < 16 || magic.some((m, i) => b[i] !== m)) return null;
  const len = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(12, true);
  if (len > 64 * 2 ** 20) throw new Error(`invalid nextscale pack file: a header of ${len} bytes`);
  if (b.length < 16 + len) return undefined; // not all here yet
  try {
    return JSON.parse(new TextDecoder().decode(b.subarray(16, 16 + len)));
  } catch (e) {
    throw new Error(`invalid nextscale pack file: bad header (${e.message})`);
  }
}

/**
 * What this browser offers: WebGPU adapter, limits, shader-f16, and whether a model fits.
 * `model` is a file size in bytes, or a pack header (`{ header, fileBytes }` or the header
 * object itself): then `memory` gives its in-memory size and the verdict is per backend.
 */
/** Threads the CPU backend can use on this page, and why not more. */
function cpuThreads() {
  const why = threadsUnavailable();
  if (why) return { max: 1, reason: why };
  const cores = defaultThreads();
  return { max: cores, reason: cores > 1 ? null : 'the browser reports one core' };
}

export async function capabilities(model, backend = 'auto') {
  const modelBytes = typeof model === 'number' || model === undefined || model === null ? model : undefined;
  const out = {
    webgpu: false,
    adapter: null,
    limits: null,
    shaderF16: false,
    threads: cpuThreads(),
    maxModelBytes: MAX_MODEL_BYTES,
    fits: true,
    reason: null,
  };
  const gpu = globalThis.navigator?.gpu;
  if (gpu) {
    try {
      const a = await gpu.requestAdapter();
      if (a) {
        const info = a.info || {};
        out.webgpu = true;
        out.adapter = {
          vendor: info.vendor ?? '',
          architecture: info.architecture ?? '',
          device: info.device ?? '',
          description: info.description ?? '',
          isFallbackAdapter: Boolean(info.isFallbackAdapter ?? a.isFallbackAdapter),
        };
        out.limits = {
          maxBufferSize: a.limits.maxBufferSize,
          maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize,
          maxComputeWorkgroupStorageSize: a.limits.maxComputeWorkgroupStorageSize,
          maxComputeInvocationsPerWorkgroup: a.limits.maxComputeInvocationsPerWorkgroup,
        };
        out.shaderF16 = a.features.has('shader-f16');
      }
    } catch (e) {
      out.reason = `WebGPU adapter request failed: ${e.message}`;
    }
  }
  if (model !== null && typeof model === 'object') {
    const header = model.header ?? model;
    const mem = packMemory(header, model.fileBytes ?? 0);
    const on = backend === 'auto' ? (out.webgpu && !out.adapter?.isFallbackAdapter ? 'webgpu' : 'cpu') : backend;
    Object.assign(out, packFits(mem, on, out.limits), { memory: { ...mem, backend: on, available: WASM_MEMORY_BYTES } });
    return out;
  }
  if (modelBytes !== undefined && modelBytes !== null) {
    if (!Number.isFinite(modelBytes) || modelBytes < 0) throw new TypeError('modelBytes must be a number ≥ 0');
    if (modelBytes > MAX_MODEL_BYTES) {
      out.fits = false;
      out.reason = `a model of ${modelBytes} bytes does not fit: the limit is ${MAX_MODEL_BYTES} bytes`;
    }
  }
  return out;
}

function checkKeys(obj, known, what) {
  for (const k of Object.keys(obj)) {
    if (!known.includes(k)) throw new TypeError(`unknown ${what} option '${k}' (known: ${known.join(', ')})`);
  }
}

/**
 * Streams a response body into `sink` ({ begin(expected), append(chunk) }) chunk by chunk:
 * the page never holds the whole file. The header is checked (`fit`) as soon as it is here,
 * so a pack that cannot fit is refused before its weights download. With `keep`, each chunk
 * is also kept as a Blob part (browsers hold those outside the page's heap) for the cache.
 */
async function readBody(response, total, stage, onProgress, signal, fit, sink, keep) {
  await sink.begin(total ?? 0);
  if (!response.body) {
    const buf = new Uint8Array(await response.arrayBuffer());
    await fit?.(buf, buf.length);
    keep?.push(new Blob([buf]));
    sink.append(buf);
    onProgress?.({ stage, loadedBytes: buf.length, totalBytes: buf.length });
    return buf.length;
  }
  const reader = response.body.getReader();
  let head = [];
  let loaded = 0;
  let checked = !fit;
  let isPack = false;
  onProgress?.({ stage, loadedBytes: 0, totalBytes: total });
  try {
    for (;;) {
      if (signal?.aborted) throw abortError('loading was cancelled');
      const { done, value } = await reader.read();
      if (done) break;
      loaded += value.length;
      if (!checked) {
        head.push(value.slice());
        const bytes = concat(head, head.reduce((a, c) => a + c.length, 0));
        const h = readPackHeader(bytes);
        if (h !== undefined) {
          checked = true;
          isPack = h !== null;
          head = null;
          if (isPack) await fit(bytes, total ?? loaded, h);
          else if ((total ?? 0) > MAX_MODEL_BYTES) throw tooLarge(total);
        }
      }
      if (checked && !isPack && loaded > MAX_MODEL_BYTES) throw tooLarge(loaded);
      keep?.push(new Blob([value]));
      sink.append(value);
      onProgress?.({ stage, loadedBytes: loaded, totalBytes: total ?? loaded });
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    throw e;
  }
  if (total != null && loaded !== total) {
    throw new Error(`the weight file is truncated: received ${loaded} of ${total} bytes`);
  }
  if (!checked && fit) await fit(concat(head, loaded), loaded);
  return loaded;
}

function concat(chunks, n) {
  if (chunks.length === 1) return chunks[0];
  const out = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    out.set(c, o);
    o += c.length;
  }
  chunks.splice(0, chunks.length, out);
  return out;
}

/**
 * Progress events carry nextscale's fields ({ stage, loadedBytes, totalBytes }) and those that
 * transformers.js users expect ({ status, file, progress 0–100, loaded, total }).
 */
function withStatus(onProgress, source) {
  const file = typeof source === 'string' || source instanceof URL ? String(source) : '(bytes)';
  return (e) => onProgress({
    ...e,
    status: e.stage === 'ready' ? 'ready' : e.stage === 'init' ? 'initiate' : 'progress',
    file,
    loaded: e.loadedBytes,
    total: e.totalBytes,
    progress: e.totalBytes ? (100 * e.loadedBytes) / e.totalBytes : 0,
  });
}

/** Refuses a download whose announced size cannot fit in wasm memory at all, before its body
 * is read (a pack's header then refines the verdict; other files must fit MAX_MODEL_BYTES). */
async function checkFits(total) {
  if (total == null) return;
  if (total > WASM_MEMORY_BYTES) {
    throw new Error(`a model of ${total} bytes does not fit: wasm memory holds at most ${WASM_MEMORY_BYTES} bytes`);
  }
}

function tooLarge(n) {
  return new Error(`a model of ${n} bytes does not fit: the limit is ${MAX_MODEL_BYTES} bytes for weight files that are not nextscale packs`);
}

/** A check of a pack's header against the chosen backend (run as soon as the header is read). */
function packCheck(backend) {
  return async (_head, fileBytes, header) => {
    const h = header ?? readPackHeader(_head);
    if (!h) return;
    const caps = await capabilities({ header: h, fileBytes }, backend);
    if (!caps.fits) throw new Error(caps.reason);
  };
}

function abortError(msg) {
  const e = new Error(msg);
  e.name = 'AbortError';
  return e;
}

function lengthOf(response) {
  const n = Number(response.headers.get('content-length'));
  return Number.isFinite(n) && n > 0 && !response.headers.get('content-encoding') ? n : null;
}

/** The cache entry's validator: the server's ETag, else Last-Modified, else the length. */
function validatorOf(response) {
  const etag = response.headers.get('etag');
  if (etag) return `etag:${etag}`;
  const lm = response.headers.get('last-modified');
  const len = response.headers.get('content-length');
  if (lm) return `lm:${lm}:${len ?? ''}`;
  return len ? `len:${len}` : null;
}

let oldCachesGone = false;
async function openCache() {
  if (!globalThis.caches) return null;
  try {
    if (!oldCachesGone) {
      oldCachesGone = true;
      await caches.delete('nextscale-models-v1'); // entries without validators
    }
    return await caches.open(CACHE_NAME);
  } catch (e) {
    console.warn(`nextscale: the Cache API is unavailable (${e.message}); loading without it`);
    return null;
  }
}

/**
 * Deletes cached models: the entry of one URL, or every entry when no URL is given.
 * Resolves to true when something was deleted.
 */
export async function purge(url) {
  if (!globalThis.caches) return false;
  if (url === undefined) return caches.delete(CACHE_NAME);
  const store = await caches.open(CACHE_NAME);
  return store.delete(new URL(url, globalThis.location?.href).href);
}

/**
 * Streams a model into `sink` (the engine's wasm buffer), and says how to treat the cache once
 * the model has loaded: `commit()` stores a download (only then: a body that does not load,
 * such as an HTML error page or a truncated file, is never cached), `evict()` removes a cached
 * entry that failed to load.
 */
async function fetchModel(source, sink, { onProgress, cache, signal, backend = 'auto' }) {
  const none = { commit: async () => {}, evict: async () => {}, fromCache: false };
  const fit = packCheck(backend);
  if (source instanceof ArrayBuffer) source = new Uint8Array(source);
  if (ArrayBuffer.isView(source)) {
    const bytes = new Uint8Array(source.buffer, source.byteOffset, source.byteLength).slice();
    await fit(bytes, bytes.length);
    await sink.begin(bytes.length);
    sink.append(bytes);
    onProgress?.({ stage: 'read', loadedBytes: bytes.length, totalBytes: bytes.length });
    return { total: bytes.length, ...none };
  }
  if (typeof Response !== 'undefined' && source instanceof Response) {
    if (!source.ok) throw new Error(`the response failed: HTTP ${source.status}`);
    const total = lengthOf(source);
    await checkFits(total);
    return { total: await readBody(source, total, 'download', onProgress, signal, fit, sink), ...none };
  }
  if (typeof source !== 'string' && !(source instanceof URL)) {
    throw new TypeError('source must be a URL (string or URL), an ArrayBuffer, a Uint8Array or a Response');
  }
  const url = new URL(source, globalThis.location?.href).href;
  const store = cache ? await openCache() : null;
  let hit = null;
  if (store) {
    try {
      hit = (await store.match(url)) ?? null;
    } catch {
      hit = null;
    }
  }
  const cached = hit?.headers.get('x-nextscale-validator') ?? null;
  const fromHit = async () => ({
    total: await readBody(hit, lengthOf(hit), 'cache', onProgress, signal, fit, sink),
    commit: async () => {},
    evict: async () => { await store.delete(url).catch(() => {}); },
    fromCache: true,
  });
  const ctl = new AbortController();
  const stop = () => ctl.abort();
  signal?.addEventListener('abort', stop);
  try {
    let response;
    try {
      // Revalidate a cached copy: an updated model at the same URL is downloaded again.
      const headers = {};
      if (cached?.startsWith('etag:')) headers['If-None-Match'] = cached.slice(5);
      else if (cached?.startsWith('lm:')) headers['If-Modified-Since'] = cached.split(':').slice(1, -1).join(':');
      response = await fetch(url, { signal: ctl.signal, headers });
    } catch (e) {
      if (signal?.aborted) throw abortError('loading was cancelled');
      if (hit) {
        console.warn(`nextscale: cannot reach ${url} (${e.message}); using the cached copy`);
        return await fromHit();
      }
      throw new Error(`cannot download ${url}: ${e.message}`);
    }
    if (hit && (response.status === 304 || (response.ok && validatorOf(response) === cached))) {
      ctl.abort(); // the cached copy is current: do not download the body
      return await fromHit();
    }
    if (!response.ok) throw new Error(`cannot download ${url}: HTTP ${response.status}`);
    const total = lengthOf(response);
    try {
      await checkFits(total);
    } catch (e) {
      ctl.abort(); // refuse before the weights download
      throw e;
    }
    // The chunks go to the engine as they arrive; Blob parts keep a copy to cache.
    const keep = store ? [] : null;
    const n = await readBody(response, total, 'download', onProgress, signal, fit, sink, keep);
    const validator = validatorOf(response) ?? `len:${n}`;
    return {
      total: n,
      fromCache: false,
      evict: async () => {},
      commit: async () => {
        if (!store) return;
        try {
          const blob = new Blob(keep);
          await store.put(url, new Response(blob, {
            headers: { 'content-length': String(blob.size), 'x-nextscale-validator': validator },
          }));
        } catch (e) {
          console.warn(`nextscale: could not cache the model (${e.name}: ${e.message}); keeping it in memory only`);
        }
      },
    };
  } finally {
    signal?.removeEventListener('abort', stop);
  }
}

/**
 * An edit's image or mask as { width, height, data } of unpremultiplied RGBA bytes, from
 * ImageData, a canvas (HTMLCanvasElement or OffscreenCanvas), an ImageBitmap, a Blob (PNG,
 * JPEG, WebP …) or such an object already. Never resized here: the library resizes.
 */
export async function toRgba(x, name = 'image') {
  if (x === null || typeof x !== 'object') throw new TypeError(`${name} must be ImageData, a canvas, an ImageBitmap, a Blob or { width, height, data }`);
  const copy = (d) => new Uint8Array(d.buffer, d.byteOffset, d.byteLength).slice();
  if (typeof ImageData !== 'undefined' && x instanceof ImageData) return { width: x.width, height: x.height, data: copy(x.data) };
  const isCanvas = (typeof HTMLCanvasElement !== 'undefined' && x instanceof HTMLCanvasElement)
    || (typeof OffscreenCanvas !== 'undefined' && x instanceof OffscreenCanvas);
  let bitmap = null;
  if (isCanvas) {
    const ctx = x.getContext('2d');
    if (ctx) {
      const d = ctx.getImageData(0, 0, x.width, x.height);
      return { width: d.width, height: d.height, data: copy(d.data) };
    }
    bitmap = await createImageBitmap(x); // a WebGL/WebGPU canvas
  } else if (typeof Blob !== 'undefined' && x instanceof Blob) {
    try {
      bitmap = await createImageBitmap(x, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
    } catch (e) {
      throw new Error(`${name}: the file is not an image the browser can decode (${e.message})`);
    }
  } else if (typeof ImageBitmap !== 'undefined' && x instanceof ImageBitmap) {
    bitmap = x;
  } else if (Number.isInteger(x.width) && Number.isInteger(x.height) && ArrayBuffer.isView(x.data)) {
    return { width: x.width, height: x.height, data: copy(x.data) };
  } else {
    throw new TypeError(`${name} must be ImageData, a canvas, an ImageBitmap, a Blob or { width, height, data }`);
  }
  if (!bitmap.width || !bitmap.height) throw new Error(`${name} is empty`);
  const c = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = c.getContext('2d');
  ctx.drawImage(bitmap, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height);
  return { width: d.width, height: d.height, data: copy(d.data) };
}

class WorkerEngine {
  constructor(backend, threads) {
    this.backend = backend;
    this.threads = threads;
    this.worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
    this.next = 1;
    this.pending = new Map();
    this.worker.onmessage = (ev) => {
      const m = ev.data;
      const p = this.pending.get(m.id);
      if (!p) return;
      if (m.type === 'scale') return p.onScale?.(m.event);
      this.pending.delete(m.id);
      if (m.type === 'done') p.resolve(m.result);
      else {
        const e = new Error(m.message);
        e.name = m.name;
        p.reject(e);
      }
    };
    this.worker.onerror = (ev) => {
      // A crashed worker rejects everything pending and every later call; the next
      // Generator.load starts a fresh one.
      this.dead = new Error(`the nextscale worker failed (${ev.message || 'unknown error'}); load the model again`);
      for (const p of this.pending.values()) p.reject(this.dead);
      this.pending.clear();
      this.worker.terminate();
    };
  }
  call(msg, transfer = [], onScale) {
    const id = this.next++;
    if (this.dead) return { id, promise: Promise.reject(this.dead) };
    return {
      id,
      promise: new Promise((resolve, reject) => {
        this.pending.set(id, { resolve, reject, onScale });
        this.worker.postMessage({ ...msg, id }, transfer);
      }),
    };
  }
  // The model file arrives in pieces (begin, append …, load); the worker writes each into
  // wasm memory and reports any failure when `load` is called.
  begin(expected) {
    if (this.dead) throw this.dead;
    this.worker.postMessage({ id: 0, type: 'begin', expected, backend: this.backend, threads: this.threads });
  }
  append(chunk) {
    if (this.dead) throw this.dead;
    this.worker.postMessage({ id: 0, type: 'chunk', bytes: chunk }, [chunk.buffer]);
  }
  load(backend) {
    return this.call({ type: 'load', backend }).promise;
  }
  generate(options, onScale, signal, previews = true) {
    const transfer = [options.image?.data?.buffer, options.mask?.data?.buffer].filter(Boolean);
    const { id, promise } = this.call({ type: 'generate', options, wantScales: Boolean(onScale), previews }, transfer, onScale);
    const cancel = () => this.worker.postMessage({ id: 0, type: 'cancel', target: id });
    signal?.addEventListener('abort', cancel, { once: true });
    return promise.finally(() => signal?.removeEventListener('abort', cancel));
  }
  dispose() {
    this.worker.terminate();
    const e = new Error('the generator was disposed');
    for (const p of this.pending.values()) p.reject(e);
    this.pending.clear();
  }
}

/**
 * What 'auto' means: WebGPU on a hardware adapter; the CPU (wasm) path when WebGPU is missing
 * or its adapter is a CPU-emulated fallback (SwiftShader), which is far slower than the CPU path.
 */
async function chooseBackend(backend) {
  if (backend !== 'auto') return { chosen: backend, reason: null };
  const caps = await capabilities();
  if (!caps.webgpu) return { chosen: 'cpu', reason: caps.reason ?? 'WebGPU is not available in this browser' };
  if (caps.adapter?.isFallbackAdapter) {
    return { chosen: 'cpu', reason: 'the only WebGPU adapter is a CPU-emulated fallback; the CPU (wasm) path is faster' };
  }
  return { chosen: 'auto', reason: null };
}

/** A loaded model. Create it with `await Generator.load(source, options)`. */
export class Generator {
  constructor(engine, loaded) {
    this._engine = engine;
    this.backend = loaded.backend;
    this.info = loaded.info;
  }

  /**
   * Loads a model from a URL, ArrayBuffer, Uint8Array or Response.
   * Options: backend ('webgpu' | 'cpu' | 'auto', default 'auto'), onProgress({stage, loadedBytes,
   * totalBytes}), cache (Cache API, default true), worker (default true), signal, threads (CPU
   * backend; default the cores, at most 8; more than one needs a cross-origin-isolated page).
   */
  static async load(source, options = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
    checkKeys(options, LOAD_OPTIONS, 'load');
    const { cache = true, worker = true, signal } = options;
    if (options.device !== undefined && !(options.device in DEVICES)) {
      throw new TypeError(`device must be one of ${Object.keys(DEVICES).join(', ')}, got '${options.device}'`);
    }
    if (options.backend !== undefined && !BACKENDS.includes(options.backend)) {
      throw new TypeError(`backend must be one of ${BACKENDS.join(', ')}, got '${options.backend}'`);
    }
    const fromDevice = options.device === undefined ? undefined : DEVICES[options.device];
    if (fromDevice !== undefined && options.backend !== undefined && fromDevice !== options.backend) {
      throw new TypeError(`device '${options.device}' and backend '${options.backend}' disagree: give one of them`);
    }
    const backend = fromDevice ?? options.backend ?? 'auto';
    if (options.onProgress !== undefined && options.progress_callback !== undefined) {
      throw new TypeError('give onProgress or progress_callback, not both');
    }
    const onProgress = options.onProgress ?? options.progress_callback;
    if (onProgress !== undefined && typeof onProgress !== 'function') throw new TypeError('onProgress must be a function');
    const progress = onProgress && withStatus(onProgress, source);
    const threads = options.threads;
    if (threads !== undefined && !(Number.isInteger(threads) && threads >= 1 && threads <= 64)) {
      throw new TypeError(`threads must be a whole number from 1 to 64, got ${threads}`);
    }
    const { chosen, reason } = await chooseBackend(backend);
    const attempt = async (useCache) => {
      // The engine starts first: the file streams into its wasm memory as it downloads.
      let engine;
      if (worker && typeof Worker !== 'undefined') {
        engine = new WorkerEngine(chosen, threads);
      } else {
        const { Engine } = await import('./engine.js');
        engine = new Engine(chosen, threads);
      }
      let got;
      try {
        got = await fetchModel(source, engine, { onProgress: progress, cache: useCache, signal, backend: chosen });
      } catch (e) {
        engine.dispose?.();
        throw e;
      }
      const total = got.total;
      progress?.({ stage: 'init', loadedBytes: total, totalBytes: total });
      try {
        const loaded = await engine.load(chosen);
        await got.commit(); // cached only once it has loaded
        progress?.({ stage: 'ready', loadedBytes: total, totalBytes: total });
        const why = reason ?? (backend === 'auto' ? 'a hardware WebGPU adapter' : `asked for '${backend}'`);
        return new Generator(engine, { ...loaded, info: { ...loaded.info, backend: loaded.backend, backendReason: why } });
      } catch (e) {
        engine.dispose?.();
        await got.evict();
        if (got.fromCache && e.name !== 'AbortError') {
          console.warn(`nextscale: the cached copy failed to load (${e.message}); downloading it again`);
          return attempt(false);
        }
        throw e;
      }
    };
    return attempt(cache);
  }

  /**
   * Generates one image: { classLabel | prompt, cfg, topK, topP, seed, moreSmooth, signal, onScale,
   * previews }. `onScale` gets a preview image after each scale unless `previews: false`
   * (then only { scale, numScales, patch }: previews of large models cost a decode each).
   * Edits an image with { image, mask | keepScales | keepHalf } (plus the same options; without
   * classLabel or prompt an edit is unconditional in-/out-painting).
   * Resolves to { width, height, rgba, tokens, timings, backend }.
   */
  async generate(options = {}) {
    if (options === null || typeof options !== 'object') throw new TypeError('options must be an object');
    if (!this._engine) throw new Error('the generator was disposed: load the model again');
    const { signal, onScale, numImages, previews = true, ...rest } = options;
    if (typeof previews !== 'boolean') throw new TypeError('previews must be true or false');
    if (numImages !== undefined) {
      if (!Number.isInteger(numImages) || numImages < 1 || numImages > MAX_IMAGES) {
        throw new TypeError(`numImages must be an integer from 1 to ${MAX_IMAGES}, got ${numImages}`);
      }
      const seed = rest.seed ?? 0;
      if (!Number.isSafeInteger(seed) || seed < 0 || !Number.isSafeInteger(seed + numImages - 1)) {
        throw new TypeError(`seed must be an integer ≥ 0 (numImages uses seed … seed + ${numImages - 1}), got ${seed}`);
      }
      // Image i is exactly what a single call with seed + i makes.
      const out = [];
      for (let i = 0; i < numImages; i++) {
        const img = await this.generate({ ...rest, seed: seed + i, signal, onScale, previews });
        img.seed = seed + i;
        out.push(img);
      }
      return out;
    }
    if (onScale !== undefined && typeof onScale !== 'function') throw new TypeError('onScale must be a function');
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError('signal must be an AbortSignal');
    if (signal?.aborted) throw abortError('generation was cancelled');
    // Images are read here, on the page (a canvas cannot be posted to a Worker).
    if (rest.image !== undefined) rest.image = await toRgba(rest.image, 'image');
    if (rest.mask !== undefined) rest.mask = await toRgba(rest.mask, 'mask');
    return new GeneratedImage(await this._engine.generate(rest, onScale, signal, previews));
  }

  /** Frees the model and its worker. */
  dispose() {
    this._engine.dispose?.();
    this._engine = null;
  }
}
