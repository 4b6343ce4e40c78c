// Two builds of the package side by side in one Chromium: time per image on the wasm CPU
// path, one thread and the threaded module, A and B loaded in two pages and taking turns
// image by image so that both see the same machine state. Prints the medians and each build's
// median time per scale.
//
//   node bench/browser-ab.mjs pkg-a pkg-b
//
// pkg-a and pkg-b are folders under the repository root (e.g. a copy of pkg/ built at another
// commit), or the same folder twice with MODEL_B set (two packs side by side). MODEL (and
// MODEL_B, B's pack; default MODEL), PROMPT (else class 3), RUNS (images per build, after one
// warm-up) and THREADS choose the rest; CHROMIUM_ARGS adds browser flags (e.g. '--js-flags=--prof' for a
// V8 profile of every worker, read with `node --prof-process isolate-*.log`).
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from '../www/tests/server.mjs';

const ROOT = path.resolve(import.meta.dirname, '..');
const [A, B] = process.argv.slice(2);
if (!A || !B) throw new Error('usage: node bench/browser-ab.mjs PKG_A PKG_B (folders under the repository root)');
const MODEL = process.env.MODEL || 'models/emoji.nsp';
const MODEL_B = process.env.MODEL_B || MODEL;
const SIDES = [[A, MODEL], [B, MODEL_B]].map(([pkg, model], i) => ({
  pkg, model, label: `${'AB'[i]}: ${pkg}${MODEL_B === MODEL ? '' : ` ${model}`}`,
}));
const PROMPT = process.env.PROMPT;
const RUNS = Number(process.env.RUNS || 30);
const THREADS = Number(process.env.THREADS || 2);
const OPTS = { ...(PROMPT ? { prompt: PROMPT } : { classLabel: 3 }), cfg: 4, topK: 900, topP: 0.96 };
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];

const srv = await startServer(ROOT);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--disable-quic',
    ...(process.env.CHROMIUM_ARGS ? process.env.CHROMIUM_ARGS.split(' ') : [])],
});

/** A page with `pkg` loaded and warmed up (one image), ready to generate. */
async function open({ pkg, model }, threads) {
  const prefix = threads > 1 ? '/iso' : '';
  const page = await browser.newPage();
  await page.goto(`${srv.base}${prefix}/www/tests/blank.html`);
  const got = await page.evaluate(async ({ pkg, model, opts, threads, prefix }) => {
    const lib = await import(`${prefix}/${pkg}/index.js`);
    globalThis.gen = await lib.Generator.load(`${prefix}/${model}`, { backend: 'cpu', cache: false, threads });
    await globalThis.gen.generate({ ...opts, seed: 0 });
    return globalThis.gen.info.threads;
  }, { pkg, model, opts: OPTS, threads, prefix });
  if (got !== threads) throw new Error(`${pkg}: asked for ${threads} threads, got ${got}`);
  return page;
}

const image = (page, seed) => page.evaluate(async ({ opts, seed }) => {
  const t = (await globalThis.gen.generate({ ...opts, seed })).timings;
  return { total: t.totalMs, scales: t.scalesMs };
}, { opts: OPTS, seed });

// Both builds stay loaded (an idle pool sleeps) and take turns image by image, so a slow
// spell of the machine falls on both.
const res = []; // one row per (threads, side), in the order first measured
for (const threads of new Set([1, THREADS])) {
  const pages = [await open(SIDES[0], threads), await open(SIDES[1], threads)];
  for (let i = 1; i <= RUNS; i++) {
    for (const side of i % 2 ? [0, 1] : [1, 0]) {
      const r = await image(pages[side], i);
      let row = res.find((x) => x.side === side && x.threads === threads);
      if (!row) res.push(row = { side, threads, total: [], scales: [] });
      row.total.push(r.total);
      row.scales.push(r.scales);
    }
  }
  for (const page of pages) await page.close();
}
await browser.close();
srv.server.close();

console.log(`${MODEL_B === MODEL ? MODEL : `${MODEL} / ${MODEL_B}`} (${PROMPT ? `'${PROMPT}'` : 'class 3'}), ${RUNS} images each, taking turns, ${new Date().toISOString().slice(0, 10)}`);
console.log('| build | threads | time per image (median) | per scale (median, ms) |');
console.log('|---|---|---|---|');
for (const r of res) {
  const per = r.scales[0].map((_, s) => median(r.scales.map((x) => x[s])).toFixed(1)).join(' ');
  console.log(`| ${SIDES[r.side].label} | ${r.threads} | ${median(r.total).toFixed(1)} ms | ${per} |`);
}
