// Adds two more art styles of the flat emoji data set's training emoji, for the judge only
// (the emoji model still trains on Noto alone):
//   OUT/styles/fluent/<file>.png          Fluent Emoji Flat, rasterised at 64 px with resvg
//   OUT/groups/train-styles/<group>/      Noto, Twemoji and Fluent Flat images of every
//                                         training emoji (prefixes noto-, tw-, fl-)
// OUT is the layout of emoji-flat.mjs (its captions.json says each emoji's split and group), so
// the held-out emoji stay held out in every style. The judge is still scored on the held-out
// Noto images (OUT/groups/test).
//
// Sources (npm):
//   emoji-datasource-twitter@16.0.0     img/twitter/64/<file> (package MIT; Twemoji art CC-BY 4.0)
//   @iconify-json/fluent-emoji-flat@1.2.6  icons.json (SVG bodies), chars.json (code → name); MIT
//   @resvg/resvg-js-linux-x64-gnu@2.6.2  the resvg rasteriser's Node binding (MPL-2.0)
//
// usage: node emoji-styles.mjs <twitter dir> <fluent-flat dir> <resvg binding dir> <out>
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { norm } from './common.mjs';

const [twPkg, flPkg, resvgPkg, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node emoji-styles.mjs <twitter dir> <fluent-flat dir> <resvg binding dir> <out>');
  process.exit(2);
}
const SIZE = 64;
const binding = fs.readdirSync(resvgPkg).find((f) => f.endsWith('.node'));
if (!binding) throw new Error(`${resvgPkg}: no resvg binding (.node) for this platform`);
const { Resvg } = createRequire(import.meta.url)(path.join(resvgPkg, binding));

const read = (...p) => JSON.parse(fs.readFileSync(path.join(...p), 'utf8'));
const rows = read(out, 'captions.json');
const icons = read(flPkg, 'icons.json');
const nameByCode = new Map(Object.entries(read(flPkg, 'chars.json')).map(([c, n]) => [norm(c), n]));

const fluentPng = (file) => {
  const name = nameByCode.get(norm(file.replace(/\.png$/, '')));
  const icon = name && icons.icons[name];
  if (!icon) return null;
  const w = icon.width ?? icons.width;
  const h = icon.height ?? icons.height;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${w} ${h}">${icon.body}</svg>`;
  const opts = { fitTo: { mode: 'width', value: SIZE }, background: 'rgba(0,0,0,0)' };
  return new Resvg(svg, JSON.stringify(opts)).render().asPng();
};

// Laid out beside the final folder and renamed into place at the end, so an interrupted run
// never looks finished to fetch.sh (which checks that the folder exists).
const final = path.join(out, 'groups', 'train-styles');
const dir = `${final}.partial`;
const flDir = path.join(out, 'styles', 'fluent');
fs.rmSync(dir, { recursive: true, force: true });
fs.mkdirSync(flDir, { recursive: true });
const counts = { noto: 0, tw: 0, fl: 0 };
const missing = { tw: 0, fl: 0 };
for (const r of rows.filter((r) => r.split === 'train')) {
  const g = path.join(dir, r.group);
  fs.mkdirSync(g, { recursive: true });
  fs.linkSync(path.join(out, 'train', r.file), path.join(g, `noto-${r.file}`));
  counts.noto += 1;
  const tw = path.join(twPkg, 'img', 'twitter', '64', r.file);
  if (fs.existsSync(tw)) {
    fs.linkSync(tw, path.join(g, `tw-${r.file}`));
    counts.tw += 1;
  } else missing.tw += 1;
  const png = fluentPng(r.file);
  if (png) {
    const f = path.join(flDir, r.file);
    fs.writeFileSync(f, png);
    fs.linkSync(f, path.join(g, `fl-${r.file}`));
    counts.fl += 1;
  } else missing.fl += 1;
}
fs.rmSync(final, { recursive: true, force: true });
fs.renameSync(dir, final);
console.log(
  `emoji styles: ${counts.noto} Noto, ${counts.tw} Twemoji (${missing.tw} missing), ` +
    `${counts.fl} Fluent Flat (${missing.fl} missing) training images in ${final}`,
);
