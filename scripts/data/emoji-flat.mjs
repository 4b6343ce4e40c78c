// Lays out the flat emoji data set (Noto art at 64 px) for native-trainer:
//   OUT/train/metadata.jsonl           one row per image, its emojibase label as caption (VQ-VAE)
//   OUT/train-captions/metadata.jsonl  one row per (image, caption): several captions per image
//                                      (label, short names, distinctive emojilib keywords) (VAR)
//   OUT/test/metadata.jsonl            held-out emoji, one row each, label as caption
//   OUT/groups/{train,test}/<group>/   the same images in folders by emoji group (the judge)
//   OUT/captions.json                  every caption of every image (for per-prompt checks)
// Images are copied as hard links (regular files inside OUT), never symbolic links.
// Only base emoji (no skin-tone variants) and no "component" swatches. The test split holds
// out 10 % of the emoji by a hash of the label, except the everyday prompts the docs show,
// which stay in train.
//
// Sources (npm, all MIT-licensed packages; the Noto images are Apache-2.0):
//   emoji-datasource-google@16.0.0   img/google/64/<code>.png, emoji.json (names, short names)
//   emojibase-data@17.0.0            en/data.json (labels, groups)
//   emojilib@4.0.3                   dist/emoji-en-US.json (keywords)
//
// usage: node emoji-flat.mjs <emoji-datasource-google dir> <emojibase-data dir> <emojilib dir> <out>
import fs from 'node:fs';
import path from 'node:path';
import { fnv1a, norm } from './common.mjs';

const [imgPkg, basePkg, libPkg, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node emoji-flat.mjs <datasource dir> <emojibase dir> <emojilib dir> <out>');
  process.exit(2);
}
const TEST_PERCENT = 10;
const MAX_CAPTIONS = 4;
// Shown in docs/MODELS.md and the README: kept in the training split.
export const EVERYDAY = [
  'red apple', 'rocket', 'dog face', 'pizza', 'sun', 'snowman', 'green heart', 'flag: Japan',
  'cat face', 'automobile', 'deciduous tree', 'fire', 'star', 'ghost', 'guitar', 'hamburger',
  'grinning face', 'thumbs up',
];


const read = (...p) => JSON.parse(fs.readFileSync(path.join(...p), 'utf8'));
const source = read(imgPkg, 'emoji.json');
const base = read(basePkg, 'en', 'data.json');
const groups = read(basePkg, 'meta', 'groups.json').groups;
const lib = read(libPkg, 'dist', 'emoji-en-US.json');

const byCode = new Map(base.map((e) => [norm(e.hexcode), e]));
const libByCode = new Map();
const keywordUse = new Map();
for (const [emoji, words] of Object.entries(lib)) {
  const code = [...emoji].map((c) => c.codePointAt(0).toString(16)).join('-');
  libByCode.set(norm(code), words);
  for (const w of words) keywordUse.set(w, (keywordUse.get(w) ?? 0) + 1);
}
const words = (s) => s.toLowerCase().replace(/[_-]+/g, ' ').trim();

const rows = [];
const unmatched = [];
for (const e of source) {
  if (!e.has_img_google || e.category === 'Component') continue;
  const file = path.join(imgPkg, 'img', 'google', '64', e.image);
  const meta = byCode.get(norm(e.unified));
  if (!meta || meta.group === undefined || !fs.existsSync(file)) {
    unmatched.push(e.unified);
    continue;
  }
  const captions = [meta.label];
  const add = (c) => {
    c = words(c);
    if (c && !c.includes(':') && !captions.some((x) => x.toLowerCase() === c)) captions.push(c);
  };
  if (!meta.label.startsWith('flag:')) {
    const kw = libByCode.get(norm(e.unified)) ?? [];
    if (kw.length) add(kw[0]);
    for (const s of e.short_names) if (!/^flag /.test(words(s))) add(s);
    // Keywords that name at most two emoji say which one is meant ("car", "tree").
    for (const w of kw.slice(1)) if (keywordUse.get(w) <= 2 && /^[a-z_ ]{3,}$/.test(w)) add(w);
  }
  rows.push({ src: file, file: e.image, label: meta.label, group: groups[String(meta.group)],
    captions: captions.slice(0, MAX_CAPTIONS) });
}

const everyday = new Set(EVERYDAY.map((s) => s.toLowerCase()));
for (const r of rows) {
  r.split = !everyday.has(r.label.toLowerCase()) && fnv1a(r.label) % 100 < TEST_PERCENT ? 'test' : 'train';
}
const missing = EVERYDAY.filter((l) => !rows.some((r) => r.label.toLowerCase() === l.toLowerCase()));
if (missing.length) throw new Error(`everyday prompts without an emoji: ${missing.join(', ')}`);

fs.rmSync(out, { recursive: true, force: true });
const link = (src, dir, file) => {
  fs.mkdirSync(dir, { recursive: true });
  fs.linkSync(src, path.join(dir, file));
};
const jsonl = (dir, lines) =>
  fs.writeFileSync(path.join(dir, 'metadata.jsonl'), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
const counts = {};
for (const split of ['train', 'test']) {
  const dir = path.join(out, split);
  const mine = rows.filter((r) => r.split === split);
  for (const r of mine) {
    link(r.src, dir, r.file);
    link(r.src, path.join(out, 'groups', split, r.group), r.file);
    counts[r.group] ??= { train: 0, test: 0 };
    counts[r.group][split] += 1;
  }
  jsonl(dir, mine.map((r) => ({ file_name: r.file, text: r.label, group: r.group })));
}
const capDir = path.join(out, 'train-captions');
const capLines = [];
for (const r of rows.filter((r) => r.split === 'train')) {
  link(r.src, capDir, r.file);
  for (const c of r.captions) capLines.push({ file_name: r.file, text: c, group: r.group });
}
jsonl(capDir, capLines);
fs.writeFileSync(
  path.join(out, 'captions.json'),
  JSON.stringify(rows.map((r) => ({ file: r.file, split: r.split, group: r.group, captions: r.captions })), null, 0),
);
const train = rows.filter((r) => r.split === 'train').length;
console.log(
  `flat emoji: ${rows.length} images, ${train} train (${capLines.length} captions), ` +
    `${rows.length - train} test, ${unmatched.length} without a label (${unmatched.join(' ')})`,
);
for (const [g, c] of Object.entries(counts)) console.log(`  ${g}: ${c.train} train, ${c.test} test`);
