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
      `loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s on ${gen.backend === 'webgpu' ? 'WebGPU' : `CPU (wasm, ${info.threads === 1 ? '1 thread' : `${info.threads} threads`})`}: ` +
      `VAR d${info.depth}, ${info.takesPrompts ? 'text prompts' : `${info.numClasses} classes`}, ${info.imageSize}×${info.imageSize} px` +
      ($('backend').value === 'auto' ? ` (auto: ${info.backendReason})` : ''));
    $('prompt-row').hidden = !info.takesPrompts;
    $('class-row').hidden = info.takesPrompts;
    $('notice').textContent = /random/.test(name)
      ? 'This demo model has random weights: it exercises the whole pipeline, and its images are noise, not pictures.'
      : '';
    const sel = $('class');
    sel.innerHTML = '';
    for (let i = 0; i < info.numClasses; i++) {
      sel.add(new Option(info.classNames?.[i] ?? `class ${i}`, String(i)));
    }
    sel.add(new Option('unconditional', String(info.numClasses)));
    // Start from the settings the model was tuned for (carried in its pack).
    const s = info.sampling;
    $('cfg').value = String(s.cfg);
    $('topk').value = String(s.topK);
    $('topp').value = String(s.topP);
    if (s.prompt != null) $('prompt').value = s.prompt;
    if (s.classLabel != null) sel.value = String(s.classLabel);
    $('topk').max = info.vocabSize;
    $('edit-strength').max = String(info.patchNums.length - 1);
    $('generate').disabled = false;
    $('edit').disabled = !$('source')._image;
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
    showResult(r, 'generated');
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

// ---- Editing: a source image, a painted mask, and the library's zero-shot edit. ----
let last = null; // the last result: { width, height, rgba, tokens }
const mask = document.createElement('canvas'); // white = regenerate, transparent = keep
let painting = false;

function showResult(r, what) {
  last = r;
  window.nextscaleLast = { what, tokens: Array.from(r.tokens), width: r.width, height: r.height };
  $('edit-use-last').disabled = false;
  const c = $('canvas');
  $('download').href = c.toDataURL('image/png');
  $('download').hidden = false;
  $('after-caption').textContent = what === 'edited' ? 'after' : 'result';
}

function setSource(width, height, rgba) {
  const src = $('source');
  src.width = width;
  src.height = height;
  src._image = new ImageData(new Uint8ClampedArray(rgba), width, height);
  mask.width = width;
  mask.height = height;
  $('before-fig').hidden = false;
  $('edit').disabled = !gen;
  modeChanged();
}

function redrawSource() {
  const src = $('source');
  if (!src._image) return;
  const ctx = src.getContext('2d');
  ctx.putImageData(src._image, 0, 0);
  ctx.globalAlpha = 0.45;
  ctx.drawImage(tinted(), 0, 0);
  ctx.globalAlpha = 1;
}

// The mask shown in red over the source.
function tinted() {
  const t = document.createElement('canvas');
  t.width = mask.width;
  t.height = mask.height;
  const ctx = t.getContext('2d');
  ctx.drawImage(mask, 0, 0);
  ctx.globalCompositeOperation = 'source-in';
  ctx.fillStyle = '#ff2030';
  ctx.fillRect(0, 0, t.width, t.height);
  return t;
}

function paintAt(ev) {
  const src = $('source');
  const r = src.getBoundingClientRect();
  const x = ((ev.clientX - r.left) / r.width) * src.width;
  const y = ((ev.clientY - r.top) / r.height) * src.height;
  const radius = (Number($('edit-brush').value) * src.width) / 64;
  const ctx = mask.getContext('2d');
  ctx.globalCompositeOperation = $('edit-erase').checked ? 'destination-out' : 'source-over';
  ctx.fillStyle = '#fff';
  ctx.beginPath();
  ctx.arc(x, y, radius, 0, 2 * Math.PI);
  ctx.fill();
  redrawSource();
}

function clearMask() {
  mask.getContext('2d').clearRect(0, 0, mask.width, mask.height);
}

function modeChanged() {
  const mode = $('edit-mode').value;
  $('edit-brush-row').hidden = mode !== 'inpaint';
  $('edit-half-row').hidden = mode !== 'half';
  $('edit-strength-row').hidden = mode !== 'variations';
  clearMask();
  const ctx = mask.getContext('2d');
  ctx.fillStyle = '#fff';
  const w = mask.width;
  const h = mask.height;
  if (mode === 'outpaint') {
    ctx.fillRect(0, 0, w, h);
    ctx.clearRect(w / 4, h / 4, w / 2, h / 2); // keep the centre, redraw the border
  } else if (mode === 'half') {
    const half = $('edit-half').value;
    if (half === 'top') ctx.fillRect(0, h / 2, w, h / 2);
    if (half === 'bottom') ctx.fillRect(0, 0, w, h / 2);
    if (half === 'left') ctx.fillRect(w / 2, 0, w / 2, h);
    if (half === 'right') ctx.fillRect(0, 0, w / 2, h);
  }
  redrawSource();
}

function maskIsEmpty() {
  const d = mask.getContext('2d').getImageData(0, 0, mask.width, mask.height).data;
  for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return false;
  return true;
}

async function edit() {
  const src = $('source');
  if (!gen || !src._image) return;
  const mode = $('edit-mode').value;
  const region = mode === 'variations'
    ? { keepScales: Number($('edit-strength').value) }
    : mode === 'half'
      ? { keepHalf: $('edit-half').value }
      : { mask };
  if (mode === 'inpaint' && maskIsEmpty()) {
    setStatus('edit-status', 'paint over the part to redraw first', true);
    return;
  }
  running = new AbortController();
  $('edit').disabled = true;
  $('cancel').disabled = false;
  setStatus('edit-status', 'editing…');
  try {
    const cond = gen.info.takesPrompts
      ? ($('prompt').value.trim() ? { prompt: $('prompt').value } : {})
      : ($('class').value !== String(gen.info.numClasses) ? { classLabel: Number($('class').value) } : {});
    const r = await gen.generate({
      ...cond,
      ...region,
      image: src._image,
      cfg: Number($('cfg').value),
      topK: Number($('topk').value),
      topP: Number($('topp').value),
      seed: Number($('seed').value),
      signal: running.signal,
      onScale: (e) => draw(e),
    });
    draw(r);
    showResult(r, 'edited');
    setStatus('edit-status', `edited in ${(r.timings.totalMs / 1000).toFixed(2)} s`);
    document.body.dataset.edited = String(Number(document.body.dataset.edited || 0) + 1);
  } catch (e) {
    setStatus('edit-status', e.name === 'AbortError' ? 'cancelled' : `failed: ${e.message}`, e.name !== 'AbortError');
  } finally {
    running = null;
    $('edit').disabled = !gen;
    $('cancel').disabled = true;
  }
}

$('edit-use-last').onclick = () => last && setSource(last.width, last.height, last.rgba);
// For automation (the browser tests): the current source and mask as PNG data URLs.
window.nextscaleEditState = () => {
  const src = $('source');
  const c = document.createElement('canvas');
  c.width = src.width;
  c.height = src.height;
  if (src._image) c.getContext('2d').putImageData(src._image, 0, 0);
  const m = document.createElement('canvas');
  m.width = mask.width;
  m.height = mask.height;
  const ctx = m.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, m.width, m.height);
  ctx.drawImage(mask, 0, 0);
  return { source: c.toDataURL('image/png'), mask: m.toDataURL('image/png'), mode: $('edit-mode').value };
};
$('edit-file').onchange = async () => {
  const f = $('edit-file').files[0];
  if (!f) return;
  try {
    const { toRgba } = await import('../pkg/index.js');
    const img = await toRgba(f, 'image');
    setSource(img.width, img.height, img.data);
  } catch (e) {
    setStatus('edit-status', `could not read ${f.name}: ${e.message}`, true);
  }
};
$('edit-mode').onchange = modeChanged;
$('edit-half').onchange = modeChanged;
$('edit-clear').onclick = () => { clearMask(); redrawSource(); };
$('edit').onclick = edit;
$('source').addEventListener('pointerdown', (e) => {
  if ($('edit-mode').value !== 'inpaint') return;
  painting = true;
  $('source').setPointerCapture(e.pointerId);
  paintAt(e);
});
$('source').addEventListener('pointermove', (e) => painting && paintAt(e));
$('source').addEventListener('pointerup', () => { painting = false; });

$('load').onclick = load;
$('generate').onclick = generate;
$('cancel').onclick = () => running?.abort();
capabilities().then((c) => {
  if (!c.webgpu) setStatus('load-status', 'WebGPU is not available here: the CPU (wasm) backend will be used.');
});
// Links can choose the model and backend: index.html?model=../models/digits.nsp&backend=cpu
const params = new URLSearchParams(location.search);
if (params.get('model')) $('model-url').value = params.get('model');
if (['auto', 'webgpu', 'cpu'].includes(params.get('backend'))) $('backend').value = params.get('backend');
load();
