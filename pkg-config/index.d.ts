// Types of the nextscale browser package.

export type Backend = 'webgpu' | 'cpu' | 'auto';
/** transformers.js's name for the backend: 'wasm' is the CPU path. */
export type Device = 'webgpu' | 'wasm' | 'cpu' | 'auto';

export interface LoadProgress {
  /** 'download' | 'cache' | 'read' while bytes arrive, then 'init', then 'ready'. */
  stage: 'download' | 'cache' | 'read' | 'init' | 'ready';
  loadedBytes: number;
  totalBytes: number | null;
  /** The same event in the shape transformers.js users handle. */
  status: 'progress' | 'initiate' | 'ready';
  /** The URL (or '(bytes)'). */
  file: string;
  /** 0–100. */
  progress: number;
  loaded: number;
  total: number | null;
}

export interface LoadOptions {
  /** Where the model runs (default 'auto'). */
  device?: Device;
  /** The same as `device` (older name); give one of them. */
  backend?: Backend;
  onProgress?: (p: LoadProgress) => void;
  /** transformers.js's name for `onProgress`. */
  progress_callback?: (p: LoadProgress) => void;
  /**
   * Keep downloaded weights in the Cache API (default true). A download is stored only after it
   * has loaded; a cached copy is revalidated with the server (ETag, Last-Modified, else the
   * length) and downloaded again when it changed, and evicted when it fails to load.
   */
  cache?: boolean;
  /** Run the model in a Web Worker (default true). */
  worker?: boolean;
  signal?: AbortSignal;
  /**
   * Threads for the CPU backend (default: the cores the browser reports, at most 8). More than
   * one needs a cross-origin-isolated page (COOP `same-origin` + COEP `require-corp`); without
   * it the model runs on one thread and `info.threadsReason` says why.
   */
  threads?: number;
}

export interface ModelInfo {
  depth: number;
  width: number;
  heads: number;
  numClasses: number;
  vocabSize: number;
  patchNums: number[];
  imageSize: number;
  parameters: number;
  /** The model file carries a text encoder. */
  hasTextEncoder: boolean;
  /** `generate({ prompt })` works: a text encoder and a text-conditioned model or adapter. */
  takesPrompts: boolean;
  /** Class names from the pack (`numClasses` of them), or null when it carries none. */
  classNames: string[] | null;
  /** What `generate()` uses for an absent option: the pack's recommended settings, else the official defaults. */
  sampling: SamplingDefaults;
  /** The backend in use, and why: `'auto'` takes WebGPU on a hardware adapter and the CPU path when WebGPU is missing or only a CPU-emulated fallback adapter exists. */
  backend: 'webgpu' | 'cpu';
  backendReason: string;
  /** Threads the model computes on (1 on WebGPU, and on the CPU without cross-origin isolation). */
  threads: number;
  /** Why the CPU backend runs on one thread, or null when it runs threaded (or on WebGPU). */
  threadsReason: string | null;
}

export interface SamplingDefaults {
  cfg: number;
  topK: number;
  topP: number;
  /** A prompt that shows the model at its best (text models), or null. */
  prompt: string | null;
  /** A class that shows the model at its best (class models), or null. */
  classLabel: number | null;
  /** True when these settings come from the pack; false: the official VAR defaults (cfg 4, top-k 900, top-p 0.96). */
  fromPack: boolean;
}

export interface ScaleEvent {
  scale: number;
  numScales: number;
  patch: number;
  /** Preview of the image after this scale (absent with `previews: false`). */
  width?: number;
  height?: number;
  rgba?: Uint8ClampedArray;
}

export interface GenerateOptions {
  /** Class id; `numClasses` is unconditional. Give this or `prompt`. */
  classLabel?: number;
  /** A text prompt, for models whose `info.takesPrompts` is true. */
  prompt?: string;
  /** Guidance strength at the last scale (default: `info.sampling.cfg`). */
  cfg?: number;
  /** Top-k filter (default: `info.sampling.topK`; 1 = greedy; ≥ vocabulary = off). */
  topK?: number;
  /** Top-p filter (default: `info.sampling.topP`; 0 = off). */
  topP?: number;
  /** Seed (integer, default 0): the same seed gives the same image on every platform. */
  seed?: number;
  /**
   * Make this many images (1 … MAX_IMAGES): `generate` then resolves to an array, image i being
   * exactly what a single call with `seed + i` makes. Absent: one image, not an array.
   */
  numImages?: number;
  moreSmooth?: boolean;
  signal?: AbortSignal;
  onScale?: (e: ScaleEvent) => void;
  /** Decode a preview for each `onScale` event (default true); false sends only the scale
   * numbers: a preview of a 256-px model costs a full decode per scale. */
  previews?: boolean;
  /**
   * Edit this image instead of generating from nothing (any size: composited on white, resized
   * and centre-cropped as training images are). Give exactly one of `mask`, `keepScales` and
   * `keepHalf`. Without `classLabel` or `prompt` the edit is unconditional (in-/out-painting).
   */
  image?: ImageSource;
  /** White = regenerate, black or transparent = keep; any size. A token is kept when more than half of its pixels are. */
  mask?: ImageSource;
  /** Variations: keep every token of the first K scales (1 … number of scales) and sample the rest. */
  keepScales?: number;
  /** Half completion: keep this half and complete the rest. */
  keepHalf?: 'top' | 'bottom' | 'left' | 'right';
}

/** What `image` and `mask` accept; canvases are read on the page (they cannot go to a Worker). */
export type ImageSource =
  | ImageData
  | HTMLCanvasElement
  | OffscreenCanvas
  | ImageBitmap
  | Blob
  | { width: number; height: number; data: Uint8Array | Uint8ClampedArray };

/** Reads an ImageSource as unpremultiplied RGBA bytes (what `generate` does with `image` and `mask`). */
export function toRgba(x: ImageSource, name?: string): Promise<{ width: number; height: number; data: Uint8Array }>;

export class GeneratedImage {
  width: number;
  height: number;
  rgba: Uint8ClampedArray;
  /** All tokens, scales in order, row-major within a scale. */
  tokens: Uint32Array;
  timings: { scalesMs: number[]; sampleMs: number; decodeMs: number; totalMs: number };
  backend: 'webgpu' | 'cpu';
  /** The wasm module's memory after this image (it only grows, so: the peak so far). */
  memory: { wasmBytes: number };
  /** The seed of this image (set when it came from a `numImages` call). */
  seed?: number;
  /** The pixels as ImageData. */
  toImageData(): ImageData;
  /** The image encoded (default 'image/png'; 'image/jpeg' and 'image/webp' take a quality 0–1). */
  toBlob(type?: string, quality?: number): Promise<Blob>;
}
/** The older name of GeneratedImage. */
export type GenerateResult = GeneratedImage;
export const MAX_IMAGES: number;

export interface Capabilities {
  webgpu: boolean;
  adapter: { vendor: string; architecture: string; device: string; description: string; isFallbackAdapter: boolean } | null;
  limits: {
    maxBufferSize: number;
    maxStorageBufferBindingSize: number;
    maxComputeWorkgroupStorageSize: number;
    maxComputeInvocationsPerWorkgroup: number;
  } | null;
  shaderF16: boolean;
  /** Threads the CPU backend can use here (1 without cross-origin isolation), and why not more. */
  threads: { max: number; reason: string | null };
  maxModelBytes: number;
  /** Whether a model of the given size can be loaded. */
  fits: boolean;
  reason: string | null;
}

/** Largest weight file that is not a pack (f32 safetensors: twice its size in wasm memory). */
export const MAX_MODEL_BYTES: number;
/** The wasm memory a page can give a model (wasm32's 4 GiB less room for the module). */
export const WASM_MEMORY_BYTES: number;

/** What a pack becomes in memory: on the CPU its q8/q4 matrices stay packed in the file's
 * bytes; on WebGPU the weights are f32 on the GPU. */
export interface PackMemory {
  fileBytes: number;
  weightBytes: number;
  largestTensorBytes: number;
  /** KV cache and last-scale activations at batch 2 (guidance), and the VQ-VAE decoder's feature maps. */
  activationBytes: number;
  /** `denseBytes`: tensors kept as f32 (embeddings, norms, f16/f32-stored ones) plus the largest weight while it runs. */
  cpu: { wasmBytes: number; denseBytes: number };
  webgpu: { wasmBytes: number; gpuBytes: number };
}
/** The in-memory size of a pack from its header alone. */
export function packMemory(header: object, fileBytes?: number): PackMemory;
/** The JSON header of a pack from a prefix of its bytes; null when the bytes are not a pack, undefined when the prefix is too short. */
export function readPackHeader(bytes: Uint8Array | ArrayBuffer): object | null | undefined;
/**
 * What this browser offers, and whether a model fits: give a file size, or a pack header
 * (`{ header, fileBytes }`) for the per-backend verdict on its in-memory size.
 * `Generator.load` runs the same check on a pack's header as soon as it has downloaded, before
 * the weights.
 */
export function capabilities(model?: number | { header: object; fileBytes?: number }, backend?: Backend): Promise<Capabilities & { memory?: PackMemory & { backend: 'cpu' | 'webgpu'; available: number } }>;

/** Deletes the cached copy of one model URL, or every cached model; true when something was deleted. */
export function purge(url?: string | URL): Promise<boolean>;

export class Generator {
  static load(source: string | URL | ArrayBuffer | Uint8Array | Response, options?: LoadOptions): Promise<Generator>;
  readonly backend: 'webgpu' | 'cpu';
  readonly info: ModelInfo;
  generate(options: GenerateOptions & { numImages: number }): Promise<GeneratedImage[]>;
  generate(options?: GenerateOptions): Promise<GeneratedImage>;
  dispose(): void;
}
