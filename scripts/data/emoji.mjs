// Joins the Fluent 3D emoji images with their emojibase labels and writes the training
// layout native-trainer reads:
//   OUT/train/metadata.jsonl, OUT/test/metadata.jsonl   captioned folders (text-to-image)
//   OUT/groups/{train,test}/<group>/<file>.webp          class folders (group classifier)
//   OUT/train-base/metadata.jsonl                         the train split without skin-tone
//                                                         variants (one image per subject)
// Images are symbolic links into the unpacked npm package; nothing is re-encoded.
// The test split holds out whole emoji (every skin tone of one emoji lands on the same side),
// chosen by a hash of the base emoji's label, so the split never changes between runs.
//
// usage: node emoji.mjs <fluent-emoji-3d package dir> <emojibase-data package dir> <out dir>
import fs from 'node:fs';
import path from 'node:path';
import { fnv1a, norm } from './common.mjs';

const [imgPkg, basePkg, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node emoji.mjs <fluent-emoji-3d dir> <emojibase-data dir> <out dir>');
  process.exit(2);
}
const TEST_PERCENT = 10;

// File names and emojibase hexcodes differ in case, in the variation selector FE0F and in the

const data = JSON.parse(fs.readFileSync(path.join(basePkg, 'en', 'data.json'), 'utf8'));
const groups = JSON.parse(fs.readFileSync(path.join(basePkg, 'meta', 'groups.json'), 'utf8')).groups;
const byCode = new Map();
for (const e of data) {
  byCode.set(norm(e.hexcode), { label: e.label, group: e.group, base: e.label });
  for (const s of e.skins ?? []) {
    byCode.set(norm(s.hexcode), { label: s.label, group: s.group ?? e.group, base: e.label });
  }
}

const assets = path.join(imgPkg, 'assets');
const files = fs.readdirSync(assets).filter((f) => f.endsWith('.webp')).sort();
const rows = { train: [], test: [] };
const unmatched = [];
for (const f of files) {
  const meta = byCode.get(norm(f.slice(0, -'.webp'.length)));
  if (!meta || meta.group === undefined) {
    unmatched.push(f);
    continue;
  }
  const split = fnv1a(meta.base) % 100 < TEST_PERCENT ? 'test' : 'train';
  rows[split].push({ file: f, caption: meta.label, group: groups[String(meta.group)] });
}

fs.rmSync(out, { recursive: true, force: true });
const counts = {};
rows['train-base'] = rows.train.filter((r) => !r.caption.includes('skin tone'));
for (const split of ['train', 'test', 'train-base']) {
  const dir = path.join(out, split);
  fs.mkdirSync(dir, { recursive: true });
  const lines = [];
  for (const r of rows[split]) {
    const src = path.resolve(assets, r.file);
    fs.symlinkSync(src, path.join(dir, r.file));
    lines.push(JSON.stringify({ file_name: r.file, text: r.caption, group: r.group }));
    if (split === 'train-base') continue;
    const gdir = path.join(out, 'groups', split, r.group);
    fs.mkdirSync(gdir, { recursive: true });
    fs.symlinkSync(src, path.join(gdir, r.file));
    counts[r.group] ??= { train: 0, test: 0 };
    counts[r.group][split] += 1;
  }
  fs.writeFileSync(path.join(dir, 'metadata.jsonl'), lines.join('\n') + '\n');
}
console.log(
  `emoji: ${files.length} images, ${rows.train.length} train ` +
    `(${rows['train-base'].length} without skin-tone variants), ${rows.test.length} test, ` +
    `${unmatched.length} without a label (${unmatched.join(' ')})`,
);
for (const [g, c] of Object.entries(counts)) console.log(`  ${g}: ${c.train} train, ${c.test} test`);
