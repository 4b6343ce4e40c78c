// The nextscale demo page: load a model, generate with progressive coarse-to-fine previews.
import { Generator, capabilities } from '../pkg/index.js';

const $ = (id) => document.getElementById(id);
let gen = null;
let running = null;

function setStatus(id, text, isError = false) {
  $(id).textContent = text;
  $(id).classList.toggle('error', isError);
}

function draw({ width, height, rgba }) {
  const c = $('canvas');
  c.width = width;
  c.height = height;
  c.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(rgba), width, height), 0, 0);
}

function fmtBytes(n) {
  return n == null ? '?' : n > 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(0)} kB`;
}

async function load() {
  $('load').disabled = true;
  $('generate').disabled = true;
  gen?.dispose();
  gen = null;
  const file = $('model-file').files[0];
  const source = file ? new Uint8Array(await file.arrayBuffer()) : $('model-url').value;
  const name = file ? file.name : $('model-url').value;
  try {
    const t0 = performance.now();
    gen = await Generator.load(source, {
      backend: $('backend').value,
      onProgress: ({ stage, loadedBytes, totalBytes }) => {
        $('load-progress').max = totalBytes || 1;
        $('load-progress').value = loadedBytes;
        setStatus('load-status', `${stage}: ${fmtBytes(loadedBytes)} of ${fmtBytes(totalBytes)}`);
      },
    });
    const info = gen.info;
    setStatus('load-status',
      `loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s on ${gen.backend === 'webgpu' ? 'WebGPU' : 'CPU (wasm)'}: ` +
      `VAR d${info.depth}, ${info.takesPrompts ? 'text prompts' : `${info.numClasses} classes`}, ${info.imageSize}×${info.imageSize} px`);
    $('prompt-row').hidden = !info.takesPrompts;
    $('class-row').hidden = info.takesPrompts;
    $('notice').textContent = /random/.test(name)
      ? 'This demo model has random weights: it exercises the whole pipeline, and its images are noise, not pictures.'
      : '';
    const sel = $('class');
    sel.innerHTML = '';
    for (let i = 0; i < info.numClasses; i++) sel.add(new Option(`class ${i}`, String(i)));
    sel.add(new Option('unconditional', String(info.numClasses)));
    $('topk').max = info.vocabSize;
    $('generate').disabled = false;
  } catch (e) {
    setStatus('load-status', `could not load ${name}: ${e.message}`, true);
  } finally {
    $('load').disabled = false;
  }
}

async function generate() {
  if (!gen) return;
  running = new AbortController();
  $('generate').disabled = true;
  $('cancel').disabled = false;
  setStatus('gen-status', 'generating…');
  $('timings').innerHTML = '';
  try {
    const cond = gen.info.takesPrompts
      ? { prompt: $('prompt').value }
      : { classLabel: Number($('class').value) };
    const r = await gen.generate({
      ...cond,
      cfg: Number($('cfg').value),
      topK: Number($('topk').value),
      topP: Number($('topp').value),
      seed: Number($('seed').value),
      signal: running.signal,
      onScale: (e) => {
        draw(e);
        setStatus('gen-status', `scale ${e.scale + 1} of ${e.numScales} (${e.patch}×${e.patch} tokens)`);
      },
    });
    draw(r);
    setStatus('gen-status', `done in ${(r.timings.totalMs / 1000).toFixed(2)} s on ${r.backend}`);
    document.body.dataset.generated = String(Number(document.body.dataset.generated || 0) + 1);
    const rows = [
      ['sampling', `${r.timings.sampleMs.toFixed(0)} ms`],
      ['decoding', `${r.timings.decodeMs.toFixed(0)} ms`],
      ['per scale', r.timings.scalesMs.map((t) => t.toFixed(0)).join(' · ') + ' ms'],
    ];
    $('timings').innerHTML = rows.map(([k, v]) => `<tr><td>${k}</td><td>${v}</td></tr>`).join('');
  } catch (e) {
    setStatus('gen-status', e.name === 'AbortError' ? 'cancelled' : `failed: ${e.message}`, e.name !== 'AbortError');
  } finally {
    running = null;
    $('generate').disabled = !gen;
    $('cancel').disabled = true;
  }
}

$('load').onclick = load;
$('generate').onclick = generate;
$('cancel').onclick = () => running?.abort();
capabilities().then((c) => {
  if (!c.webgpu) setStatus('load-status', 'WebGPU is not available here: the CPU (wasm) backend will be used.');
});
load();
