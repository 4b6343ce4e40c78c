// Official-size model in a page: loads www/models/d16-q4.nsp (random d16 VAR + the official
// VQ-VAE architecture, q4; `native-trainer fixture official --depth 16 --quant q4`) with the
// npm package on the CPU path in headless Chromium, makes one full 256-px image, and records
// load time, time per scale, decode time, the wasm memory after the image (it only grows, so
// that is its peak), and the peak resident memory of Chromium's processes (sampled every
// 100 ms with ps). Prints JSON. Run by scripts/bench-d16-browser.sh.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from '../www/tests/server.mjs';

const ROOT = path.resolve(import.meta.dirname, '..');
const MODEL = process.env.MODEL || 'www/models/d16-q4.nsp';
const fileBytes = fs.statSync(path.join(ROOT, MODEL)).size;

/** Resident memory of every Chromium process: { total, largest } in bytes. */
function chromiumRss() {
  let out = '';
  try {
    out = execFileSync('ps', ['-eo', 'rss=,comm=,args='], { encoding: 'utf8' });
  } catch {
    return { total: 0, largest: 0 };
  }
  let total = 0;
  let largest = 0;
  for (const line of out.split('\n')) {
    const m = /^\s*(\d+)\s+(\S+)\s+(.*)$/.exec(line);
    if (!m || !/chrom/i.test(m[2] + m[3]) || /node /.test(m[3])) continue;
    const b = Number(m[1]) * 1024;
    total += b;
    largest = Math.max(largest, b);
  }
  return { total, largest };
}

const srv = await startServer(ROOT);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic', '--js-flags=--expose-gc'],
});
const page = await browser.newPage();
page.on('console', (m) => console.error(`[page ${m.type()}] ${m.text()}`));
await page.goto(`${srv.base}/www/tests/blank.html`);
const idle = chromiumRss();
let peak = { ...idle };
const timer = setInterval(() => {
  const r = chromiumRss();
  peak = { total: Math.max(peak.total, r.total), largest: Math.max(peak.largest, r.largest) };
}, 100);
const r = await page.evaluate(async (model) => {
  const lib = await import('/pkg/index.js');
  const t0 = performance.now();
  const gen = await lib.Generator.load(`/${model}`, { device: 'cpu', cache: false });
  const loadMs = performance.now() - t0;
  const img = await gen.generate({ classLabel: 207, seed: 0, cfg: 4, topK: 900, topP: 0.96 });
  const out = { loadMs, timings: img.timings, memory: img.memory, width: img.width, info: gen.info };
  gen.dispose();
  return out;
}, MODEL);
clearInterval(timer);
await browser.close();
srv.server.close();
const mb = (b) => Math.round(b / 1e6);
console.log(JSON.stringify({
  model: MODEL,
  fileMB: mb(fileBytes),
  loadS: +(r.loadMs / 1000).toFixed(2),
  scalesS: r.timings.scalesMs.map((x) => +(x / 1000).toFixed(2)),
  sampleS: +(r.timings.sampleMs / 1000).toFixed(1),
  decodeS: +(r.timings.decodeMs / 1000).toFixed(1),
  totalS: +(r.timings.totalMs / 1000).toFixed(1),
  image: r.width,
  wasmMemoryMB: mb(r.memory.wasmBytes),
  wasmAboveFileMB: mb(r.memory.wasmBytes - fileBytes),
  chromiumIdleMB: mb(idle.total),
  chromiumPeakMB: mb(peak.total),
  chromiumPeakAboveIdleMB: mb(peak.total - idle.total),
  largestProcessPeakMB: mb(peak.largest),
}, null, 1));
