// Makes the threaded module's wasm-bindgen glue work after a bundler has copied and renamed
// the package's files: the glue imports wasm-bindgen-rayon's worker helpers from
// `./snippets/<crate-hash>/…`, a path bundlers do not keep. This copies the helpers to
// `nextscale_threads_helpers.js` (which engine.js references, so bundlers emit it) and makes
// the glue import them from the URL engine.js passes in its query (`?helpers=`), falling back
// to the file beside it when loaded unbundled. The query also reaches the pool's workers,
// which import the glue by its own URL.
// usage: node scripts/wasm-threads-glue.mjs PKG_DIR
import fs from 'node:fs';
import path from 'node:path';

const out = process.argv[2];
const gluePath = path.join(out, 'nextscale_wasm_threads.js');
const glue = fs.readFileSync(gluePath, 'utf8');
const re = /^import \{ startWorkers \} from '(\.\/snippets\/[^']+)';$/m;
const m = glue.match(re);
if (!m) throw new Error(`${gluePath}: no wasm-bindgen-rayon helper import to rewrite`);
fs.copyFileSync(path.join(out, m[1]), path.join(out, 'nextscale_threads_helpers.js'));
// Imported when the pool starts (no top-level await: minifiers parse the copied glue too).
const lazy = "const startWorkers = (...args) => import(new URL(import.meta.url).searchParams.get('helpers')"
  + " ?? new URL('./nextscale_threads_helpers.js', import.meta.url).href).then((h) => h.startWorkers(...args));";
fs.writeFileSync(gluePath, glue.replace(re, lazy));
fs.rmSync(path.join(out, 'snippets'), { recursive: true, force: true });
console.log(`${gluePath}: worker helpers from ?helpers= or nextscale_threads_helpers.js`);
