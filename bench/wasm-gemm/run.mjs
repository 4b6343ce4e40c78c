// The wasm side of the one-core matrix-product comparison (run.sh; main.rs is the native
// side), in headless Chromium: gemm's simd128 kernels on the shipped emoji model's last-scale shapes,
// and one register tile with a separate multiply and add against f32x4.relaxed_madd.
import fs from 'node:fs';
import { chromium } from 'playwright-core';
const T = process.env.WASM_GEMM_TARGET;
const simd = [...fs.readFileSync(`${T}/simd128/wasm32-unknown-unknown/release/wasm_gemm_bench.wasm`)];
const relaxed = [...fs.readFileSync(`${T}/relaxed/wasm32-unknown-unknown/release/wasm_gemm_bench.wasm`)];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
const page = await browser.newPage();
const out = await page.evaluate(async ({ simd, relaxed }) => {
  const load = async (b) => (await WebAssembly.instantiate(new Uint8Array(b), {})).instance.exports;
  const s = await load(simd); const r = await load(relaxed);
  const best = (f) => { f(); let b = Infinity; for (let i = 0; i < 5; i++) { const t = performance.now(); f(); b = Math.min(b, performance.now() - t); } return b / 1e3; };
  const lines = [];
  for (const [m, n, k] of [[512, 288, 96], [512, 384, 96], [512, 96, 384], [512, 512, 96]]) {
    const iters = Math.floor(200e6 / (m * n * k)) + 1;
    const t = best(() => s.products(m, n, k, iters));
    lines.push(`chromium wasm gemm ${m}x${k}·${k}x${n}: ${(2 * m * n * k * iters / t / 1e9).toFixed(1)} GFLOP/s`);
  }
  const names = ['3x16 tile, mul + add', '3x16 tile, relaxed_madd', '8x8 tile, mul + add', '8x8 tile, relaxed_madd'];
  for (let v = 0; v < 4; v++) { let fl = 0; const t = best(() => { fl = r.tiles(v, 20000); }); lines.push(`chromium wasm ${names[v]}: ${(fl * 20000 / t / 1e9).toFixed(1)} GFLOP/s`); }
  return lines;
}, { simd, relaxed });
console.log(out.join('\n'));
await browser.close();
