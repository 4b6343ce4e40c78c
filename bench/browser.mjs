// Browser benchmark: time per image in headless Chromium on WebGPU and on the wasm CPU
// backend (one thread, and the threaded module on a cross-origin-isolated page) against the
// native CLI on the same machine at the same thread count, time to first image (cold and
// warm), and the size of the wasm modules (raw, gzip, brotli). Prints markdown for
// docs/BENCHMARKS.md. BENCH_MODEL picks another class-conditional model (.safetensors or .nsp),
// BENCH_PROMPT a prompt for a text model.
// Needs pkg/, www/models/tiny-random.safetensors and native-trainer (scripts/bench-browser.sh).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { chromium } from 'playwright-core';
import { startServer } from '../www/tests/server.mjs';

const ROOT = path.resolve(import.meta.dirname, '..');
const TARGET = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/nextscale/target');
const NATIVE = path.join(TARGET, 'release/native-trainer');
const MODEL = process.env.BENCH_MODEL || 'www/models/tiny-random.safetensors';
const THREADS = Number(process.env.THREADS || 2);
const RUNS = Number(process.env.RUNS || 5);
// BENCH_PROMPT: a text model's prompt instead of class 3.
const PROMPT = process.env.BENCH_PROMPT;
const OPTS = { ...(PROMPT ? { prompt: PROMPT } : { classLabel: 3 }), cfg: 4, topK: 900, topP: 0.96 };
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];

function nativeRun(seed, threads) {
  const out = path.join(os.tmpdir(), `nextscale-bench-${seed}.png`);
  const flag = MODEL.endsWith('.nsp') ? '--pack' : '--var';
  const cond = PROMPT ? ['--prompt', PROMPT] : ['--class', '3'];
  const r = spawnSync(NATIVE, ['sample', flag, path.join(ROOT, MODEL), ...cond, '--cfg', '4', '--top-k', '900',
    '--top-p', '0.96', '--seed', String(seed), '--out', out],
  { encoding: 'utf8', env: { ...process.env, RAYON_NUM_THREADS: String(threads) } });
  if (r.status !== 0) throw new Error(r.stderr);
  const s = Number(/sampled 1 image\(s\) in ([\d.]+) s/.exec(r.stderr)[1]);
  const d = Number(/decoded in ([\d.]+) s/.exec(r.stderr)[1]);
  return (s + d) * 1000;
}

const srv = await startServer(ROOT);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--enable-unsafe-webgpu', '--no-sandbox', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic'],
});
const rows = [];
const native = {};
for (const t of [1, THREADS]) native[t] = median(Array.from({ length: RUNS }, (_, i) => nativeRun(i, t)));
let adapter = '';
// WebGPU; the CPU module on one thread; the threaded CPU module on an isolated page.
// BENCH_SKIP_WEBGPU=1: only the two CPU rows (SwiftShader takes minutes on a larger model).
const runsOn = [['webgpu', 1, ''], ['cpu', 1, ''], ['cpu', THREADS, '/iso']]
  .filter(([backend]) => !(backend === 'webgpu' && process.env.BENCH_SKIP_WEBGPU === '1'));
for (const [backend, threads, prefix] of runsOn) {
  const page = await browser.newPage(); // a fresh page: cold wasm instance and kernels
  await page.goto(`${srv.base}${prefix}/www/tests/blank.html`);
  const r = await page.evaluate(async ({ backend, model, opts, runs, threads, prefix }) => {
    const t0 = performance.now();
    const lib = await import(`${prefix}/pkg/index.js`);
    const caps = await lib.capabilities();
    const gen = await lib.Generator.load(`${prefix}/${model}`, { backend, cache: false, threads });
    const loadMs = performance.now() - t0;
    const first = await gen.generate({ ...opts, seed: 0 });
    const coldMs = performance.now() - t0;
    const warm = [];
    for (let i = 1; i <= runs; i++) warm.push((await gen.generate({ ...opts, seed: i })).timings.totalMs);
    const got = gen.info.threads;
    gen.dispose();
    return { loadMs, coldMs, firstMs: first.timings.totalMs, warm, adapter: caps.adapter, threads: got };
  }, { backend, model: MODEL, opts: OPTS, runs: RUNS, threads, prefix });
  await page.close();
  if (backend === 'webgpu') adapter = `${r.adapter?.vendor}/${r.adapter?.architecture}`;
  if (r.threads !== threads) throw new Error(`asked for ${threads} threads on ${backend}, got ${r.threads}`);
  rows.push({ backend, ...r, warmMs: median(r.warm) });
}
await browser.close();
srv.server.close();

const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;

console.log(`machine: ${os.cpus().length} × ${os.cpus()[0].model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ` +
  `Chromium ${browser.version?.() ?? ''}; WebGPU adapter ${adapter}; date ${new Date().toISOString().slice(0, 10)}`);
console.log(`model: ${MODEL}, ${PROMPT ? `prompt '${PROMPT}'` : 'class 3'}, ${OPTS.topK} / ${OPTS.topP} / cfg ${OPTS.cfg}, median of ${RUNS}`);
console.log('');
console.log('| where | threads | time per image (warm) | native CLI (CPU), same threads | ratio (native / browser) | first image, cold (load + compile + generate) | load |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  const n = native[r.threads];
  console.log(`| Chromium ${r.backend === 'webgpu' ? 'WebGPU' : 'wasm CPU'} | ${r.threads} | ${r.warmMs.toFixed(0)} ms | ${n.toFixed(0)} ms | ` +
    `${(n / r.warmMs).toFixed(2)} | ${(r.coldMs / 1000).toFixed(1)} s | ${r.loadMs.toFixed(0)} ms |`);
}
console.log('');
console.log(`| wasm module | raw | gzip -9 | brotli -11 |`);
console.log(`|---|---|---|---|`);
for (const name of ['nextscale_wasm_bg.wasm', 'nextscale_wasm_threads_bg.wasm']) {
  const f = path.join(ROOT, 'pkg', name);
  if (!fs.existsSync(f)) continue;
  const wasm = fs.readFileSync(f);
  const gz = zlib.gzipSync(wasm, { level: 9 }).length;
  const br = zlib.brotliCompressSync(wasm, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
  console.log(`| pkg/${name} | ${mb(wasm.length)} | ${mb(gz)} | ${mb(br)} |`);
}
