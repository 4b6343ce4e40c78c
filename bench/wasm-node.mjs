// The single-threaded wasm module (WebGPU + CPU) on its CPU path in Node's V8, without a
// browser: median time per image, and with `node --cpu-prof` a per-function profile (build
// the module without wasm-opt to keep its function names: `cargo rustc --release --lib
// --target wasm32-unknown-unknown --features webgpu --crate-type cdylib`, then
// `wasm-bindgen --target web --out-dir DIR --out-name nextscale_wasm <that .wasm>`).
//   node bench/wasm-node.mjs [DIR]   (DIR: a wasm-bindgen output folder, default pkg/)
// MODEL (default models/emoji.nsp), PROMPT or CLASS (default: the pack's recommended prompt or
// class), RUNS (10). Guidance 4, top-k 900, top-p 0.96, as bench/browser.mjs.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const ROOT = path.resolve(import.meta.dirname, '..');
const dir = path.resolve(process.argv[2] || path.join(ROOT, 'pkg'));
const { initSync, PackBuffer, Generator } = await import(pathToFileURL(path.join(dir, 'nextscale_wasm.js')));
initSync({ module: fs.readFileSync(path.join(dir, 'nextscale_wasm_bg.wasm')) });
const model = process.env.MODEL || path.join(ROOT, 'models/emoji.nsp');
const runs = Number(process.env.RUNS || 10);
const file = fs.readFileSync(model);
const buf = new PackBuffer(file.length);
buf.append(new Uint8Array(file));
const gen = await Generator.fromBuffer(buf, 'cpu');
const showcase = gen.info.sampling;
const cond = process.env.PROMPT ? { prompt: process.env.PROMPT }
  : process.env.CLASS ? { classLabel: Number(process.env.CLASS) }
    : showcase.prompt ? { prompt: showcase.prompt } : { classLabel: showcase.classLabel ?? 0 };
const opts = { ...cond, cfg: 4, topK: 900, topP: 0.96 };
const times = [];
for (let i = 0; i < runs; i++) {
  const t0 = performance.now();
  await gen.generate({ ...opts, seed: i }, null, null, false);
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
console.log(`${path.relative(ROOT, model)} (${JSON.stringify(cond)}): median ${times[runs >> 1].toFixed(1)} ms, fastest ${times[0].toFixed(1)} ms over ${runs} images`);
