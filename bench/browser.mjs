// Browser benchmark: time per image in headless Chromium on WebGPU and on the wasm CPU
// backend against the native CLI on the same machine, time to first image (cold and warm),
// and the size of the wasm module (raw, gzip, brotli). Prints markdown for docs/BENCHMARKS.md.
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
const MODEL = 'www/models/tiny-random.safetensors';
const RUNS = Number(process.env.RUNS || 5);
const OPTS = { classLabel: 3, cfg: 4, topK: 900, topP: 0.96 };
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];

function nativeRun(seed) {
  const out = path.join(os.tmpdir(), `nextscale-bench-${seed}.png`);
  const r = spawnSync(NATIVE, ['sample', '--var', path.join(ROOT, MODEL), '--class', '3', '--cfg', '4', '--top-k', '900',
    '--top-p', '0.96', '--seed', String(seed), '--out', out], { encoding: 'utf8' });
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
const nativeMs = median(Array.from({ length: RUNS }, (_, i) => nativeRun(i)));
let adapter = '';
for (const backend of ['webgpu', 'cpu']) {
  const page = await browser.newPage(); // a fresh page: cold wasm instance and kernels
  await page.goto(`${srv.base}/www/tests/blank.html`);
  const r = await page.evaluate(async ({ backend, model, opts, runs }) => {
    const t0 = performance.now();
    const lib = await import('/pkg/index.js');
    const caps = await lib.capabilities();
    const gen = await lib.Generator.load(`/${model}`, { backend, cache: false });
    const loadMs = performance.now() - t0;
    const first = await gen.generate({ ...opts, seed: 0 });
    const coldMs = performance.now() - t0;
    const warm = [];
    for (let i = 1; i <= runs; i++) warm.push((await gen.generate({ ...opts, seed: i })).timings.totalMs);
    gen.dispose();
    return { loadMs, coldMs, firstMs: first.timings.totalMs, warm, adapter: caps.adapter };
  }, { backend, model: MODEL, opts: OPTS, runs: RUNS });
  await page.close();
  if (backend === 'webgpu') adapter = `${r.adapter?.vendor}/${r.adapter?.architecture}`;
  rows.push({ backend, ...r, warmMs: median(r.warm) });
}
await browser.close();
srv.server.close();

const wasm = fs.readFileSync(path.join(ROOT, 'pkg/nextscale_wasm_bg.wasm'));
const gz = zlib.gzipSync(wasm, { level: 9 }).length;
const br = zlib.brotliCompressSync(wasm, { params: { [zlib.constants.BROTLI_PARAM_QUALITY]: 11 } }).length;
const mb = (n) => `${(n / 1e6).toFixed(2)} MB`;

console.log(`machine: ${os.cpus().length} × ${os.cpus()[0].model}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB; ` +
  `Chromium ${browser.version?.() ?? ''}; WebGPU adapter ${adapter}; date ${new Date().toISOString().slice(0, 10)}`);
console.log(`model: ${MODEL} (VAR d2 + 64 px VQ-VAE, random weights), ${OPTS.topK} / ${OPTS.topP} / cfg ${OPTS.cfg}, median of ${RUNS}`);
console.log('');
console.log('| where | time per image (warm) | native CLI (CPU) | ratio (native / browser) | first image, cold (load + compile + generate) | load |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| Chromium ${r.backend === 'webgpu' ? 'WebGPU' : 'wasm CPU'} | ${r.warmMs.toFixed(0)} ms | ${nativeMs.toFixed(0)} ms | ` +
    `${(nativeMs / r.warmMs).toFixed(2)} | ${(r.coldMs / 1000).toFixed(1)} s | ${r.loadMs.toFixed(0)} ms |`);
}
console.log('');
console.log(`| wasm module | raw | gzip -9 | brotli -11 |`);
console.log(`|---|---|---|---|`);
console.log(`| pkg/nextscale_wasm_bg.wasm | ${mb(wasm.length)} | ${mb(gz)} | ${mb(br)} |`);
