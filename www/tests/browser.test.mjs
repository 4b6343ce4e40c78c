// Browser tests in a real headless Chromium (Debian's), WebGPU through SwiftShader.
// Needs: pkg/ (scripts/build-wasm.sh), www/models/tiny-random.safetensors and the native
// native-trainer binary (scripts/fixtures.sh). Run: node --test www/tests/
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const ROOT = path.resolve(import.meta.dirname, '../..');
const TARGET = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), '.cache/nextscale/target');
const NATIVE = path.join(TARGET, 'release/native-trainer');
const MODEL = 'www/models/tiny-random.safetensors';
const OUT = process.env.NEXTSCALE_TEST_OUT || fs.mkdtempSync(path.join(os.tmpdir(), 'nextscale-browser-'));
const MINUTES = 60_000;

let browser, page, srv;

before(async () => {
  for (const f of ['pkg/index.js', 'pkg/nextscale_wasm_bg.wasm', MODEL]) {
    assert.ok(fs.existsSync(path.join(ROOT, f)), `${f} is missing: run scripts/build-wasm.sh and scripts/fixtures.sh`);
  }
  srv = await startServer(ROOT);
  // launch() gives every run a fresh, temporary profile.
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--enable-unsafe-webgpu', '--no-sandbox', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--disable-quic',
    ],
  });
  page = await browser.newPage();
  page.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log(`[page ${m.type()}] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`[page error] ${e.message}`));
  await page.goto(`${srv.base}/www/tests/blank.html`);
});

after(async () => {
  await browser?.close();
  srv?.server.close();
});

/** Runs `fn(lib, arg)` in the page, with the package imported as `lib`. */
function inPage(fn, arg) {
  return page.evaluate(
    async ([src, a]) => {
      const lib = await import('/pkg/index.js');
      // eslint-disable-next-line no-new-func
      return new Function('lib', 'arg', `return (${src})(lib, arg);`)(lib, a);
    },
    [fn.toString(), arg],
  );
}

function nativeTokens(args, model = MODEL) {
  const flag = model.endsWith('.nsp') ? '--pack' : '--var';
  const out = path.join(OUT, `native-${path.basename(model)}-${args.join('_').replace(/[^a-z0-9_.]/gi, '')}.json`);
  const r = spawnSync(NATIVE, ['sample', flag, path.join(ROOT, model), '--tokens-out', out, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(fs.readFileSync(out, 'utf8'))[0];
}

const GREEDY = { classLabel: 3, cfg: 2, topK: 1, topP: 0, seed: 1 };
const SAMPLED = { classLabel: 7, cfg: 3, topK: 50, topP: 0.9, seed: 7 };
const nativeArgs = (o) => ['--class', String(o.classLabel), '--cfg', String(o.cfg), '--top-k', String(o.topK), '--top-p', String(o.topP), '--seed', String(o.seed)];

test('capabilities report the WebGPU adapter and refuse models that cannot fit', async () => {
  const c = await inPage(async (lib) => [await lib.capabilities(1e6), await lib.capabilities(2 ** 31)]);
  console.log('capabilities:', JSON.stringify(c[0]));
  assert.equal(c[0].webgpu, true);
  assert.ok(c[0].limits.maxStorageBufferBindingSize > 0);
  assert.equal(typeof c[0].shaderF16, 'boolean');
  assert.equal(c[0].fits, true);
  assert.equal(c[1].fits, false);
  assert.match(c[1].reason, /does not fit/);
});

for (const backend of ['webgpu', 'cpu']) {
  test(`${backend}: greedy and sampled tokens equal the native CLI's, and the image is not blank`, { timeout: 15 * MINUTES }, async () => {
    const r = await inPage(async (lib, { backend, model, runs }) => {
      const gen = await lib.Generator.load(`/${model}`, { backend, cache: false });
      const out = { backend: gen.backend, runs: [] };
      for (const o of runs) {
        const t0 = performance.now();
        const img = await gen.generate(o);
        let min = 255, max = 0;
        for (let i = 0; i < img.rgba.length; i += 4) { min = Math.min(min, img.rgba[i]); max = Math.max(max, img.rgba[i]); }
        out.runs.push({ tokens: Array.from(img.tokens), w: img.width, h: img.height, min, max, ms: performance.now() - t0, backend: img.backend });
      }
      gen.dispose();
      return out;
    }, { backend, model: MODEL, runs: [GREEDY, SAMPLED] });
    assert.equal(r.backend, backend);
    const [greedy, sampled] = r.runs;
    console.log(`${backend}: greedy ${greedy.ms.toFixed(0)} ms, sampled ${sampled.ms.toFixed(0)} ms`);
    assert.equal(greedy.w, 64);
    assert.equal(greedy.h, 64);
    assert.ok(greedy.max > greedy.min, 'image is not blank');
    assert.deepEqual(greedy.tokens, nativeTokens(nativeArgs(GREEDY)), 'greedy tokens differ from native');
    assert.deepEqual(sampled.tokens, nativeTokens(nativeArgs(SAMPLED)), 'sampled tokens differ from native');
  });
}

test('the threaded CPU module: a cross-origin-isolated page computes on 2 threads with the native tokens; elsewhere one thread, and info says why', { timeout: 15 * MINUTES }, async () => {
  const run = async (lib, { model, runs, threads, worker = true }) => {
    const gen = await lib.Generator.load(`/${model}`, { device: 'cpu', cache: false, threads, worker });
    const out = { isolated: globalThis.crossOriginIsolated, caps: (await lib.capabilities()).threads, threads: gen.info.threads, reason: gen.info.threadsReason, runs: [] };
    for (const o of runs) {
      const t0 = performance.now();
      out.runs.push({ tokens: Array.from((await gen.generate(o)).tokens), ms: performance.now() - t0 });
    }
    gen.dispose();
    return out;
  };
  const iso = await browser.newPage();
  try {
    iso.on('console', (m) => { if (m.type() === 'error' || m.type() === 'warning') console.log(`[isolated page ${m.type()}] ${m.text()}`); });
    await iso.goto(`${srv.base}/iso/www/tests/blank.html`);
    const inIso = (arg) => iso.evaluate(async ([src, a]) => {
      const lib = await import('/iso/pkg/index.js');
      // eslint-disable-next-line no-new-func
      return new Function('lib', 'arg', `return (${src})(lib, arg);`)(lib, a);
    }, [run.toString(), arg]);
    const r = await inIso({ model: `iso/${MODEL}`, runs: [GREEDY, SAMPLED], threads: 2 });
    console.log(`threaded: ${JSON.stringify({ ...r, runs: r.runs.map((x) => `${x.ms.toFixed(0)} ms`) })}`);
    assert.equal(r.isolated, true);
    assert.equal(r.caps.reason, null);
    assert.equal(r.threads, 2, `threads: ${r.reason}`);
    assert.deepEqual(r.runs[0].tokens, nativeTokens(nativeArgs(GREEDY)), 'greedy tokens differ from native');
    assert.deepEqual(r.runs[1].tokens, nativeTokens(nativeArgs(SAMPLED)), 'sampled tokens differ from native');
    // Without the Worker the model runs on the page's thread, which may not block: one thread.
    const onPage = await inIso({ model: `iso/${MODEL}`, runs: [GREEDY], threads: 2, worker: false });
    assert.equal(onPage.threads, 1);
    assert.match(onPage.reason, /Web Worker/);
    assert.deepEqual(onPage.runs[0].tokens, nativeTokens(nativeArgs(GREEDY)));
  } finally {
    await iso.close();
  }
  const plain = await inPage(run, { model: MODEL, runs: [GREEDY], threads: 2 });
  assert.equal(plain.threads, 1);
  assert.match(plain.reason, /cross-origin isolated/);
  assert.equal(plain.caps.max, 1);
  assert.deepEqual(plain.runs[0].tokens, nativeTokens(nativeArgs(GREEDY)));
});

test('q8 and q4 packs load on WebGPU and CPU and sample the native tokens', { timeout: 15 * MINUTES }, async () => {
  for (const q of ['q8', 'q4']) {
    const model = `www/models/tiny-random-${q}.nsp`;
    const want = nativeTokens(nativeArgs(SAMPLED), model);
    for (const backend of ['webgpu', 'cpu']) {
      const r = await inPage(async (lib, { backend, model, opts }) => {
        const gen = await lib.Generator.load(`/${model}`, { backend, cache: false });
        const img = await gen.generate(opts);
        gen.dispose();
        return { tokens: Array.from(img.tokens), backend: img.backend, size: img.width };
      }, { backend, model, opts: SAMPLED });
      assert.equal(r.backend, backend);
      assert.equal(r.size, 64);
      assert.deepEqual(r.tokens, want, `${q} on ${backend}: tokens differ from native`);
    }
  }
});

test('a pack with a text encoder generates from a prompt, with the native tokens, on CPU and WebGPU', { timeout: 15 * MINUTES }, async () => {
  const model = 'www/models/shapes-text.nsp';
  const opts = { prompt: 'a blue triangle', cfg: 3, topK: 20, topP: 0.9, seed: 5 };
  const want = nativeTokens(['--prompt', opts.prompt, '--cfg', '3', '--top-k', '20', '--top-p', '0.9', '--seed', '5'], model);
  for (const backend of ['cpu', 'webgpu']) {
    const r = await inPage(async (lib, { backend, model, opts }) => {
      const gen = await lib.Generator.load(`/${model}`, { backend, cache: false });
      const img = await gen.generate(opts);
      let bad = null;
      try { await gen.generate({ classLabel: 1 }); } catch (e) { bad = String(e); }
      let both = null;
      try { await gen.generate({ prompt: 'x', classLabel: 0 }); } catch (e) { both = String(e); }
      const info = gen.info;
      gen.dispose();
      return { tokens: Array.from(img.tokens), backend: img.backend, size: img.width, info, bad, both };
    }, { backend, model, opts });
    assert.equal(r.backend, backend);
    assert.equal(r.info.takesPrompts, true);
    assert.equal(r.size, 32);
    assert.deepEqual(r.tokens, want, `prompt on ${backend}: tokens differ from native`);
    assert.match(r.bad, /classLabel|text-conditioned|prompt/);
    assert.match(r.both, /either classLabel or prompt/);
  }
});

test('the shipped packs (emoji, digits, digits + text adapter, digits + LoRA) sample the native tokens on CPU and WebGPU', { timeout: 20 * MINUTES }, async () => {
  const cases = [
    { model: 'models/emoji.nsp', opts: { prompt: 'red apple', cfg: 3, topK: 50, topP: 0.9, seed: 1 }, prompts: true, size: 64 },
    { model: 'models/digits.nsp', opts: { classLabel: 7, cfg: 3, topK: 50, topP: 0.9, seed: 2 }, prompts: false, size: 32 },
    // A class model that takes prompts through its text adapter.
    { model: 'models/digits-text.nsp', opts: { prompt: 'a picture of the number 4', cfg: 3, topK: 50, topP: 0.9, seed: 3 }, prompts: true, size: 32 },
    // LoRA updates applied at load, and a class the LoRA added (17 = Sneaker).
    { model: 'models/digits-fashion.nsp', opts: { classLabel: 17, cfg: 3, topK: 50, topP: 0.9, seed: 4 }, prompts: false, size: 32, className: 'Sneaker' },
  ];
  for (const c of cases) {
    const cond = c.prompts ? ['--prompt', c.opts.prompt] : ['--class', String(c.opts.classLabel)];
    const want = nativeTokens([...cond, '--cfg', '3', '--top-k', '50', '--top-p', '0.9', '--seed', String(c.opts.seed)], c.model);
    for (const backend of ['cpu', 'webgpu']) {
      const r = await inPage(async (lib, { backend, model, opts }) => {
        const gen = await lib.Generator.load(`/${model}`, { backend, cache: false });
        const img = await gen.generate(opts);
        const info = gen.info;
        gen.dispose();
        return { tokens: Array.from(img.tokens), size: img.width, info };
      }, { backend, model: c.model, opts: c.opts });
      assert.equal(r.info.takesPrompts, c.prompts, `${c.model}: takesPrompts`);
      if (c.className) assert.equal(r.info.classNames?.[c.opts.classLabel], c.className);
      assert.equal(r.size, c.size, `${c.model}: image size`);
      assert.deepEqual(r.tokens, want, `${c.model} on ${backend}: tokens differ from native`);
    }
  }
});

test('transformers.js-style options, numImages, toBlob/toImageData, and a fresh wasm module after a trap', { timeout: 10 * MINUTES }, async () => {
  const model = 'models/digits.nsp';
  const want = nativeTokens(['--class', '3', '--seed', '5'], model);
  const r = await inPage(async (lib, { model }) => {
    const statuses = [];
    const gen = await lib.Generator.load(`/${model}`, {
      device: 'wasm', progress_callback: (e) => statuses.push(e.status), cache: false, worker: false,
    });
    const one = await gen.generate({ classLabel: 3, seed: 5 });
    const many = await gen.generate({ classLabel: 3, seed: 4, numImages: 2 });
    const blob = await one.toBlob();
    const png = Array.from(new Uint8Array(await blob.slice(0, 4).arrayBuffer()));
    const id = one.toImageData();
    const errs = {};
    for (const [k, o] of Object.entries({
      device: { device: 'gpu' },
      clash: { device: 'webgpu', backend: 'cpu' },
      both: { onProgress: () => {}, progress_callback: () => {} },
    })) {
      try { await lib.Generator.load(`/${model}`, { ...o, cache: false }); } catch (e) { errs[k] = String(e); }
    }
    try { await gen.generate({ classLabel: 3, numImages: 0 }); } catch (e) { errs.num = String(e); }
    // A trap in the page's instance (simulated): that generator is done, the next load gets a
    // fresh module and works.
    gen._engine.model.generate = () => { throw new WebAssembly.RuntimeError('unreachable'); };
    try { await gen.generate({ classLabel: 3 }); } catch (e) { errs.trap = String(e); }
    try { await gen.generate({ classLabel: 3 }); } catch (e) { errs.again = String(e); }
    const fresh = await lib.Generator.load(`/${model}`, { device: 'cpu', cache: false, worker: false });
    const after = await fresh.generate({ classLabel: 3, seed: 5 });
    fresh.dispose();
    return {
      backend: gen.backend, statuses, one: Array.from(one.tokens), many: many.map((m) => ({ seed: m.seed, tokens: Array.from(m.tokens) })),
      isArray: Array.isArray(many), png, idSize: [id.width, id.height, id.data.length], errs, after: Array.from(after.tokens),
    };
  }, { model });
  assert.equal(r.backend, 'cpu');
  assert.deepEqual([r.statuses[0], r.statuses.at(-1)], ['progress', 'ready']);
  assert.ok(r.statuses.includes('initiate'));
  assert.deepEqual(r.one, want, 'tokens differ from native');
  assert.ok(r.isArray);
  assert.deepEqual(r.many.map((m) => m.seed), [4, 5]);
  assert.deepEqual(r.many[1].tokens, r.one, 'numImages image 1 is the single call with seed + 1');
  assert.notDeepEqual(r.many[0].tokens, r.one);
  assert.deepEqual(r.png, [0x89, 0x50, 0x4e, 0x47]);
  assert.deepEqual(r.idSize, [32, 32, 32 * 32 * 4]);
  assert.match(r.errs.device, /device must be one of webgpu, wasm, cpu, auto/);
  assert.match(r.errs.clash, /disagree/);
  assert.match(r.errs.both, /not both/);
  assert.match(r.errs.num, /numImages must be an integer/);
  assert.match(r.errs.trap, /crashed/);
  assert.match(r.errs.again, /crashed earlier/);
  assert.deepEqual(r.after, want, 'a fresh module after the trap gives the same tokens');
});

/** Serves a built app's `dist` and checks its page twice: as served plainly (one thread) and
 * cross-origin isolated under /iso/ (the threaded module, one thread per core up to 8); both
 * draw the native CLI's tokens. */
async function checkBundledApp(dist, what) {
  const served = await startServer(dist);
  const want = nativeTokens(['--class', '7', '--seed', '2'], 'models/digits.nsp');
  try {
    for (const [prefix, threaded] of [['', false], ['/iso', os.cpus().length > 1]]) {
      const p = await browser.newPage();
      try {
        p.on('pageerror', (e) => console.log(`[${what} page error] ${e.message}`));
        await p.goto(`${served.base}${prefix}/index.html`);
        await p.waitForFunction(() => window.nextscaleResult, null, { timeout: 4 * MINUTES });
        const r = await p.evaluate(() => window.nextscaleResult);
        console.log(`${what}${prefix}: ${r.threads} thread(s)${r.threadsReason ? ` (${r.threadsReason})` : ''}`);
        assert.equal(r.error, undefined, r.error);
        assert.equal(r.backend, 'cpu');
        assert.ok(r.png > 100);
        assert.equal(r.threads > 1, threaded, `${what}${prefix}: ${r.threads} threads (${r.threadsReason})`);
        assert.deepEqual(r.tokens, want, `${what}${prefix}: tokens differ from native`);
      } finally {
        await p.close();
      }
    }
  } finally {
    served.server.close();
  }
}

/** A fresh copy of an example app laid out as a user would: the package in node_modules. */
function exampleApp(name) {
  const app = fs.mkdtempSync(path.join(os.tmpdir(), `nextscale-${name}-`));
  fs.cpSync(path.join(ROOT, 'www', name), app, { recursive: true });
  fs.mkdirSync(path.join(app, 'node_modules'));
  fs.symlinkSync(path.join(ROOT, 'pkg'), path.join(app, 'node_modules/nextscale'), 'dir');
  return app;
}

test('a minimal Vite app imports the built package, builds, is served and draws the native tokens, threaded when isolated', { timeout: 5 * MINUTES }, async () => {
  const app = exampleApp('vite-app');
  fs.mkdirSync(path.join(app, 'public'));
  fs.copyFileSync(path.join(ROOT, 'models/digits.nsp'), path.join(app, 'public/digits.nsp'));
  const { build } = await import('vite');
  await build({ root: app, configFile: path.join(app, 'vite.config.js'), logLevel: 'warn' });
  await checkBundledApp(path.join(app, 'dist'), 'vite');
});

test('a minimal webpack app imports the built package, builds, is served and draws the native tokens, threaded when isolated', { timeout: 5 * MINUTES }, async () => {
  const app = exampleApp('webpack-app');
  const { default: webpack } = await import('webpack');
  const { default: config } = await import(pathToFileURL(path.join(app, 'webpack.config.mjs')).href);
  const stats = await new Promise((resolve, reject) => {
    webpack({ ...config, context: app }, (err, s) => (err ? reject(err) : resolve(s)));
  });
  assert.ok(!stats.hasErrors(), stats.toString({ all: false, errors: true }));
  const dist = path.join(app, 'dist');
  fs.copyFileSync(path.join(app, 'index.html'), path.join(dist, 'index.html'));
  fs.copyFileSync(path.join(ROOT, 'models/digits.nsp'), path.join(dist, 'digits.nsp'));
  await checkBundledApp(dist, 'webpack');
});

/** A pack header shaped like the official VAR dN (width 64·N, N heads, 10 scales, 4,096 codes) with
 * the official VQ-VAE's 109 M values (as conv-like [757, 1440] parts), stored as `storage`: only
 * the header, for fit checks. */
function officialHeader(depth, storage = 'q4') {
  const C = 64 * depth;
  const pn = [1, 2, 3, 4, 5, 6, 8, 10, 13, 16];
  const L = pn.reduce((a, p) => a + p * p, 0);
  const tensors = [];
  let offset = 0;
  const add = (name, shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const length = { q4: Math.ceil(n / 32) * 18, q8: Math.ceil(n / 32) * 34, f16: 2 * n }[storage];
    tensors.push({ name, shape, storage, offset, length, crc32: 0 });
    offset += length;
  };
  add('word_embed.weight', [C, 32]);
  add('class_emb.weight', [1001, C]);
  add('pos_1LC', [1, L, C]);
  for (let i = 0; i < depth; i++) {
    add(`blocks.${i}.attn.mat_qkv.weight`, [3 * C, C]);
    add(`blocks.${i}.attn.proj.weight`, [C, C]);
    add(`blocks.${i}.ffn.fc1.weight`, [4 * C, C]);
    add(`blocks.${i}.ffn.fc2.weight`, [C, 4 * C]);
    add(`blocks.${i}.ada_lin.1.weight`, [6 * C, C]);
  }
  add('head.weight', [4096, C]);
  for (let i = 0; i < 100; i++) add(`vae.part${i}`, [757, 1440]);
  const header = {
    var: { depth, embed_dim: C, num_heads: depth, mlp_ratio: 4, vocab_size: 4096, cvae: 32, num_classes: 1000, norm_eps: 1e-6, patch_nums: pn, text_dim: 0 },
    vae: { vocab_size: 4096, z_channels: 32, ch: 160, ch_mult: [1, 1, 2, 2, 4], num_res_blocks: 2, patch_nums: pn },
    tensors,
  };
  const json = Buffer.from(JSON.stringify(header));
  const pre = Buffer.alloc(16);
  Buffer.from('NXSPACK\0', 'latin1').copy(pre);
  pre.writeUInt32LE(2, 8);
  pre.writeUInt32LE(json.length, 12);
  return { header, bytes: Buffer.concat([pre, json]), total: 16 + json.length + offset };
}

test('official-size packs: the fit check reads the header and refuses what cannot fit before the weights download', { timeout: 5 * MINUTES }, async () => {
  const shapes = Object.fromEntries([16, 20, 24, 30].map((d) => [d, officialHeader(d)]));
  shapes['24f16'] = officialHeader(24, 'f16');
  shapes['30f16'] = officialHeader(30, 'f16');
  for (const [d, h] of Object.entries(shapes)) srv.stats.fakes[`d${d}.nsp`] = { header: h.bytes, total: h.total };
  const r = await inPage(async (lib, heads) => {
    const out = {};
    for (const [d, h] of Object.entries(heads)) {
      const c = await lib.capabilities({ header: h.header, fileBytes: h.total }, 'cpu');
      out[d] = { fits: c.fits, reason: c.reason, need: c.memory.cpu.wasmBytes, weights: c.memory.weightBytes, gpu: c.memory.webgpu.gpuBytes };
    }
    try {
      await lib.Generator.load('/test/fake/d24f16.nsp', { device: 'cpu', cache: false });
      out.load = 'resolved';
    } catch (e) {
      out.load = String(e);
    }
    return out;
  }, Object.fromEntries(Object.entries(shapes).map(([d, h]) => [d, { header: h.header, total: h.total }])));
  console.log('fit check (CPU wasm bytes):', JSON.stringify(Object.fromEntries(Object.entries(r).map(([k, v]) => [k, v.need ?? v]))));
  console.log('fit check (WebGPU GPU bytes):', JSON.stringify(Object.fromEntries(Object.entries(r).filter(([, v]) => v.gpu).map(([k, v]) => [k, v.gpu]))));
  assert.ok(r[16].weights > 1.6e9 && r[16].weights < 1.8e9, `d16 + VQ-VAE weights as f32: ${r[16].weights}`);
  // Weights stay packed on the CPU path: every official size fits in q4 (d16 in well under 1 GB).
  assert.ok(r[16].need > 0.4e9 && r[16].need < 0.8e9, `d16 q4 on the CPU: ${r[16].need}`);
  for (const d of [16, 20, 24, 30]) assert.equal(r[d].fits, true, `d${d} q4 fits the CPU path`);
  // On WebGPU the q4 matrices stay packed too: d16 needs well under its 1.7 GB of f32 weights.
  assert.ok(r[16].gpu > 0.2e9 && r[16].gpu < 0.9e9, `d16 q4 on WebGPU: ${r[16].gpu}`);
  // f16 weights are not kept packed: they become f32, and d24 no longer fits.
  for (const d of ['24f16', '30f16']) {
    assert.equal(r[d].fits, false, `d${d} cannot fit wasm32`);
    assert.match(r[d].reason, /needs about \d+\.\d+ GB of wasm memory on the CPU backend \(file with packed weights .* \+ other weights as f32 .* \+ activations .*\); a page has at most 4\.16 GB/);
  }
  assert.match(r.load, /needs about \d+\.\d+ GB of wasm memory on the CPU backend/);
  assert.ok(srv.stats.fakeSent['d24f16.nsp'] < 8 * 2 ** 20, `refused after ${srv.stats.fakeSent['d24f16.nsp']} bytes`);
});

const D16 = 'www/models/d16-q4.nsp';

test('an official-size d16 q4 pack streams into wasm memory, stays packed and samples its first scales on the CPU path', { timeout: 10 * MINUTES }, async () => {
  const size = fs.statSync(path.join(ROOT, D16)).size;
  const r = await inPage(async (lib, model) => {
    const t0 = performance.now();
    const events = [];
    const gen = await lib.Generator.load(`/${model}`, { device: 'cpu', cache: false, progress_callback: (e) => events.push(e.stage) });
    const loadMs = performance.now() - t0;
    const ctl = new AbortController();
    const scales = [];
    let error = null;
    const t1 = performance.now();
    try {
      await gen.generate({
        classLabel: 3, seed: 1, signal: ctl.signal, previews: false,
        onScale: (e) => { scales.push([e.scale, e.patch, 'rgba' in e]); if (scales.length === 3) ctl.abort(); },
      });
    } catch (e) {
      error = `${e.name}: ${e.message}`;
    }
    const ms = performance.now() - t1;
    // The same model samples again after a cancel.
    const again = [];
    const ctl2 = new AbortController();
    try {
      await gen.generate({ classLabel: 5, seed: 2, signal: ctl2.signal, previews: false, onScale: (e) => { again.push(e.scale); ctl2.abort(); } });
    } catch (e) { again.push(e.name); }
    gen.dispose();
    return { loadMs, ms, scales, error, again, info: gen.info, downloads: events.filter((s) => s === 'download').length };
  }, D16);
  console.log(`d16 q4 (${(size / 1e6).toFixed(0)} MB): loaded in ${(r.loadMs / 1000).toFixed(1)} s, ${r.scales.length} scales in ${(r.ms / 1000).toFixed(1)} s before the cancel landed`);
  assert.equal(r.info.depth, 16);
  assert.equal(r.info.backend, 'cpu');
  assert.match(r.error, /^AbortError/);
  assert.ok(r.scales.length >= 3 && r.scales.length < 10, `scales before the cancel: ${JSON.stringify(r.scales)}`);
  assert.deepEqual(r.scales.slice(0, 3), [[0, 1, false], [1, 2, false], [2, 3, false]], 'no previews were decoded');
  // The cancel lands between scales, one or two scales after it was asked for.
  assert.equal(r.again[0], 0);
  assert.equal(r.again.at(-1), 'AbortError');
  assert.ok(r.again.length <= 4, `scales after the second cancel: ${JSON.stringify(r.again)}`);
  assert.ok(r.downloads > 3, 'the file arrived in several chunks');
});

test('load progress arrives in order with correct totals, then from the cache', async () => {
  const size = fs.statSync(path.join(ROOT, MODEL)).size;
  const ev = await inPage(async (lib, model) => {
    await lib.purge();
    const runs = [];
    for (let i = 0; i < 2; i++) {
      const events = [];
      const g = await lib.Generator.load(`/${model}`, { backend: 'cpu', onProgress: (e) => events.push(e) });
      g.dispose();
      runs.push(events);
    }
    return runs;
  }, MODEL);
  for (const [i, events] of ev.entries()) {
    const stages = events.map((e) => e.stage);
    const fetchStage = i === 0 ? 'download' : 'cache';
    const n = stages.lastIndexOf(fetchStage);
    assert.ok(n >= 0, `run ${i}: no ${fetchStage} events: ${stages}`);
    assert.deepEqual(stages.slice(n + 1), ['init', 'ready']);
    assert.ok(stages.slice(0, n + 1).every((s) => s === fetchStage), `${stages}`);
    let last = -1;
    for (const e of events.slice(0, n + 1)) {
      assert.ok(e.loadedBytes >= last, 'loaded bytes never decrease');
      last = e.loadedBytes;
      assert.equal(e.totalBytes, size);
    }
    assert.equal(last, size);
    assert.equal(events.at(-1).loadedBytes, size);
  }
});

test('cancel stops between scales, and the generator stays usable', async () => {
  const r = await inPage(async (lib, model) => {
    const gen = await lib.Generator.load(`/${model}`, { backend: 'cpu', cache: false });
    const ctl = new AbortController();
    const seen = [];
    let err = null;
    try {
      await gen.generate({ classLabel: 1, signal: ctl.signal, onScale: (e) => { seen.push(e.scale); if (e.scale === 1) ctl.abort(); } });
    } catch (e) {
      err = { name: e.name, message: e.message };
    }
    const again = await gen.generate({ classLabel: 1, onScale: (e) => seen.push(100 + e.scale) });
    gen.dispose();
    return { err, seen, tokens: again.tokens.length };
  }, MODEL);
  assert.equal(r.err?.name, 'AbortError', JSON.stringify(r));
  assert.ok(r.seen.filter((s) => s < 100).length < 7, `stopped early: ${r.seen}`);
  assert.deepEqual(r.seen.filter((s) => s >= 100), [100, 101, 102, 103, 104, 105, 106], 'scales arrive coarse to fine');
  assert.equal(r.tokens, 155);
});

test('bad arguments and bad weights reject with clear messages', async () => {
  const r = await inPage(async (lib, model) => {
    const msg = async (p) => { try { await p; return 'resolved'; } catch (e) { return `${e.name}: ${e.message}`; } };
    const bytes = new Uint8Array(await (await fetch(`/${model}`)).arrayBuffer());
    const gen = await lib.Generator.load(bytes, { backend: 'cpu' });
    const out = {
      classRange: await msg(gen.generate({ classLabel: 99 })),
      noClass: await msg(gen.generate({})),
      topP: await msg(gen.generate({ classLabel: 1, topP: 2 })),
      seed: await msg(gen.generate({ classLabel: 1, seed: -1 })),
      typo: await msg(gen.generate({ classLabel: 1, topk: 5 })),
      prompt: await msg(gen.generate({ prompt: 'a cat' })),
      backend: await msg(lib.Generator.load(bytes, { backend: 'gpu' })),
      source: await msg(lib.Generator.load(42)),
      loadTypo: await msg(lib.Generator.load(bytes, { backnd: 'cpu' })),
      corrupt: await msg(lib.Generator.load(crypto.getRandomValues(new Uint8Array(4096)), { backend: 'cpu' })),
      corruptPack: await msg((async () => {
        const p = new Uint8Array(await (await fetch('/www/models/tiny-random-q8.nsp')).arrayBuffer());
        p[p.length >> 1] ^= 0x55; // inside vae.encoder.down.3.block.0.conv1.weight
        return lib.Generator.load(p, { backend: 'cpu' });
      })()),
      truncatedPack: await msg((async () => {
        const p = new Uint8Array(await (await fetch('/www/models/tiny-random-q4.nsp')).arrayBuffer());
        return lib.Generator.load(p.slice(0, p.length - 10), { backend: 'cpu' });
      })()),
      truncated: await msg(lib.Generator.load(bytes.slice(0, bytes.length >> 1), { backend: 'cpu' })),
      header: await msg(lib.Generator.load(bytes.slice(0, 6), { backend: 'cpu' })),
      missing: await msg(lib.Generator.load('/www/models/no-such-model.safetensors', { backend: 'cpu', cache: false })),
      huge: await msg(lib.Generator.load('/test/huge.bin', { backend: 'cpu', cache: false })),
    };
    // Still works after all that.
    out.after = (await gen.generate({ classLabel: 2, topK: 1 })).tokens.length;
    gen.dispose();
    return out;
  }, MODEL);
  console.log(JSON.stringify(r, null, 1));
  assert.match(r.classRange, /classLabel must be an integer from 0 to 10/);
  assert.match(r.noClass, /classLabel is required/);
  assert.match(r.topP, /topP must be in \[0, 1\]/);
  assert.match(r.seed, /seed must be an integer/);
  assert.match(r.typo, /unknown option 'topk'/);
  assert.match(r.prompt, /no text encoder/);
  assert.match(r.backend, /backend must be one of/);
  assert.match(r.source, /source must be a URL/);
  assert.match(r.loadTypo, /unknown load option 'backnd'/);
  assert.match(r.corrupt, /invalid safetensors file/);
  assert.match(r.corruptPack, /is corrupt \(checksum/);
  assert.match(r.truncatedPack, /nextscale pack.*truncated/);
  assert.match(r.truncated, /invalid safetensors file/);
  assert.match(r.header, /invalid safetensors file/);
  assert.match(r.missing, /HTTP 404/);
  assert.match(r.huge, /does not fit/);
  assert.ok(srv.stats.hugeSent < 2 ** 31, 'the oversized model was refused before downloading');
  assert.equal(r.after, 155);
});

test('the demo page, used as a new user would, generates an emoji from a prompt', { timeout: 15 * MINUTES }, async () => {
  const p = await browser.newPage();
  p.on('pageerror', (e) => console.log(`[demo error] ${e.message}`));
  await p.goto(`${srv.base}/www/index.html`);
  await p.waitForFunction(() => /loaded in/.test(document.getElementById('load-status').textContent), null, { timeout: 10 * MINUTES });
  // The page opens on the shipped emoji model: a prompt, no random-weights notice.
  assert.equal((await p.textContent('#notice')).trim(), '');
  assert.ok(await p.isVisible('#prompt'), 'the prompt box is shown for the emoji model');
  await p.fill('#prompt', 'cat face');
  await p.fill('#seed', '3');
  await p.click('#generate');
  await p.waitForFunction(() => document.body.dataset.generated === '1' || /failed/.test(document.getElementById('gen-status').textContent), null, { timeout: 10 * MINUTES });
  assert.match(await p.textContent('#gen-status'), /done in/);
  const shot = path.join(OUT, 'demo.png');
  await p.screenshot({ path: shot, fullPage: true });
  console.log(`demo screenshot: ${shot}`);
  const { std, backend } = await p.evaluate(() => {
    const c = document.getElementById('canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let s = 0, s2 = 0, n = 0;
    for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; n++; }
    return { std: Math.sqrt(s2 / n - (s / n) ** 2), backend: document.getElementById('gen-status').textContent };
  });
  console.log(`demo: ${backend}, pixel std ${std.toFixed(1)}`);
  assert.ok(std > 2, `canvas looks blank (std ${std})`);
  await p.close();
});

function nativeEdit(args, model) {
  const flag = model.endsWith('.nsp') ? '--pack' : '--var';
  const out = path.join(OUT, `edit-${args.join('_').replace(/[^a-z0-9_.]/gi, '').slice(-80)}.json`);
  const r = spawnSync(NATIVE, ['edit', flag, path.join(ROOT, model), '--tokens-out', out, ...args], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(fs.readFileSync(out, 'utf8'))[0];
}

const dataUrlToFile = (url, file) => fs.writeFileSync(file, Buffer.from(url.split(',')[1], 'base64'));

test('edits (mask as ImageData, image as a Blob; keepHalf; keepScales) give the native CLI tokens on CPU and WebGPU', { timeout: 15 * MINUTES }, async () => {
  // The source: a PNG the native CLI wrote, served to the page.
  const srcDir = path.join(ROOT, 'www/models/edit-src');
  fs.rmSync(srcDir, { recursive: true, force: true });
  const s = spawnSync(NATIVE, ['sample', '--var', path.join(ROOT, MODEL), '--class', '4', '--seed', '9', '--out-dir', srcDir], { encoding: 'utf8' });
  assert.equal(s.status, 0, s.stderr);
  const src = path.join(srcDir, '0000_class4.png');
  const base = { cfg: 2, topK: 30, topP: 0.9, seed: 4 };
  for (const backend of ['cpu', 'webgpu']) {
    const r = await inPage(async (lib, { backend, model, base }) => {
      const gen = await lib.Generator.load(`/${model}`, { backend, cache: false });
      const blob = await (await fetch('/www/models/edit-src/0000_class4.png')).blob();
      // A 50×40 mask (another size than the image): white on the left = regenerate.
      const m = new ImageData(50, 40);
      for (let y = 0; y < 40; y++) for (let x = 0; x < 50; x++) {
        const v = x < 25 ? 255 : 0;
        m.data.set([v, v, v, 255], (y * 50 + x) * 4);
      }
      const c = new OffscreenCanvas(50, 40);
      c.getContext('2d').putImageData(m, 0, 0);
      const maskPng = await c.convertToBlob({ type: 'image/png' });
      const maskUrl = await new Promise((res) => { const fr = new FileReader(); fr.onload = () => res(fr.result); fr.readAsDataURL(maskPng); });
      const masked = await gen.generate({ ...base, classLabel: 1, image: blob, mask: m });
      const half = await gen.generate({ ...base, image: blob, keepHalf: 'top' });
      const vari = await gen.generate({ ...base, classLabel: 2, image: blob, keepScales: 3 });
      const msg = async (p) => { try { await p; return 'resolved'; } catch (e) { return e.message; } };
      const errs = {
        none: await msg(gen.generate({ ...base, image: blob })),
        two: await msg(gen.generate({ ...base, image: blob, keepHalf: 'top', keepScales: 2 })),
        noImage: await msg(gen.generate({ ...base, classLabel: 1, keepScales: 2 })),
        bad: await msg(gen.generate({ ...base, image: 42, keepScales: 2 })),
        scales: await msg(gen.generate({ ...base, image: blob, keepScales: 99 })),
      };
      gen.dispose();
      return { masked: Array.from(masked.tokens), half: Array.from(half.tokens), vari: Array.from(vari.tokens), maskUrl, errs };
    }, { backend, model: MODEL, base });
    const maskFile = path.join(OUT, 'edit-mask.png');
    dataUrlToFile(r.maskUrl, maskFile);
    const common = ['--image', src, '--cfg', '2', '--top-k', '30', '--top-p', '0.9', '--seed', '4'];
    assert.deepEqual(r.masked, nativeEdit([...common, '--mask', maskFile, '--class', '1'], MODEL), `${backend}: masked edit`);
    assert.deepEqual(r.half, nativeEdit([...common, '--keep-half', 'top'], MODEL), `${backend}: half completion`);
    assert.deepEqual(r.vari, nativeEdit([...common, '--keep-scales', '3', '--class', '2'], MODEL), `${backend}: variations`);
    assert.match(r.errs.none, /exactly one of mask/);
    assert.match(r.errs.two, /exactly one of mask/);
    assert.match(r.errs.noImage, /give image too/);
    assert.match(r.errs.bad, /image must be ImageData/);
    assert.match(r.errs.scales, /keepScales must be an integer from 0 to 7/);
  }
});

test('the demo page edits: paint a mask over a generated digit, redraw it, the native CLI agrees', { timeout: 15 * MINUTES }, async () => {
  const p = await browser.newPage();
  p.on('pageerror', (e) => console.log(`[demo error] ${e.message}`));
  await p.goto(`${srv.base}/www/index.html?model=../models/digits.nsp&backend=cpu`);
  await p.waitForFunction(() => /loaded in.*10 classes/.test(document.getElementById('load-status').textContent), null, { timeout: 5 * MINUTES });
  // A class model shows the class picker (names from the pack), not the prompt box, and the
  // pack's recommended settings.
  assert.ok(await p.isVisible('#class'));
  assert.ok(!(await p.isVisible('#prompt')), 'no prompt box for a class model');
  assert.equal(await p.inputValue('#topk'), '50');
  assert.equal(await p.inputValue('#class'), '3');
  await p.selectOption('#class', '7');
  await p.click('#generate');
  await p.waitForFunction(() => document.body.dataset.generated === '1', null, { timeout: 5 * MINUTES });
  await p.click('#edit-use-last');
  // Paint the lower half with the brush, as a user drags the mouse.
  const box = await p.locator('#source').boundingBox();
  await p.mouse.move(box.x + box.width * 0.1, box.y + box.height * 0.75);
  await p.mouse.down();
  for (let i = 0; i <= 10; i++) await p.mouse.move(box.x + box.width * (0.1 + 0.08 * i), box.y + box.height * 0.75, { steps: 2 });
  await p.mouse.up();
  await p.selectOption('#class', '2');
  await p.click('#edit');
  await p.waitForFunction(() => document.body.dataset.edited === '1' || /failed/.test(document.getElementById('edit-status').textContent), null, { timeout: 5 * MINUTES });
  assert.match(await p.textContent('#edit-status'), /edited in/);
  const shot = path.join(OUT, 'demo-edit.png');
  await p.screenshot({ path: shot, fullPage: true });
  console.log(`demo edit screenshot: ${shot}`);
  const st = await p.evaluate(() => ({ ...window.nextscaleEditState(), last: window.nextscaleLast }));
  assert.equal(st.last.what, 'edited');
  const src = path.join(OUT, 'demo-edit-src.png');
  const mask = path.join(OUT, 'demo-edit-mask.png');
  dataUrlToFile(st.source, src);
  dataUrlToFile(st.mask, mask);
  const want = nativeEdit(['--image', src, '--mask', mask, '--class', '2', '--cfg', '3', '--top-k', '50', '--top-p', '0.9', '--seed', '0'], 'models/digits.nsp');
  assert.deepEqual(st.last.tokens, want, 'the page edit differs from the native CLI');
  await p.close();
});

test('the cache keeps only models that loaded, revalidates them, and purge() empties it', { timeout: 5 * MINUTES }, async () => {
  const run = (url) => inPage(async (lib, url) => {
    const stages = [];
    try {
      const g = await lib.Generator.load(url, { backend: 'cpu', onProgress: (e) => stages.push(e.stage) });
      const info = g.info;
      g.dispose();
      return { ok: true, stages, vocab: info.vocabSize, params: info.parameters };
    } catch (e) {
      return { ok: false, stages, message: e.message };
    }
  }, url);
  await inPage(async (lib) => lib.purge());
  // An HTML page served with status 200 fails to load and is not cached; the next load downloads.
  const first = await run('/test/flaky/tiny-random-q8.nsp');
  assert.equal(first.ok, false);
  assert.match(first.message, /safetensors|nextscale pack/);
  const second = await run('/test/flaky/tiny-random-q8.nsp');
  assert.ok(second.ok, second.message);
  assert.ok(second.stages.includes('download'), `${second.stages}`);
  const third = await run('/test/flaky/tiny-random-q8.nsp');
  assert.ok(third.stages.includes('cache') && !third.stages.includes('download'), `${third.stages}`);
  // A new version at the same URL (a new ETag) is downloaded again; the same one is not.
  srv.stats.version = 1;
  assert.ok((await run('/test/versioned.nsp')).stages.includes('download'));
  assert.ok((await run('/test/versioned.nsp')).stages.includes('cache'));
  srv.stats.version = 2;
  const v2 = await run('/test/versioned.nsp');
  assert.ok(v2.stages.includes('download'), `an updated model must be downloaded: ${v2.stages}`);
  // purge(url) forgets one model.
  assert.equal(await inPage(async (lib) => lib.purge('/test/versioned.nsp')), true);
  assert.ok((await run('/test/versioned.nsp')).stages.includes('download'));
  // Progress events also carry transformers.js's fields.
  const ev = await inPage(async (lib, model) => {
    const events = [];
    const g = await lib.Generator.load(`/${model}`, { backend: 'cpu', cache: false, onProgress: (e) => events.push(e) });
    g.dispose();
    let disposed = null;
    try { await g.generate({ classLabel: 1 }); } catch (e) { disposed = e.message; }
    return { last: events.at(-1), disposed };
  }, MODEL);
  assert.equal(ev.last.status, 'ready');
  assert.equal(ev.last.progress, 100);
  assert.equal(ev.last.loaded, ev.last.total);
  assert.match(ev.last.file, /tiny-random/);
  assert.match(ev.disposed, /disposed: load the model again/);
});
