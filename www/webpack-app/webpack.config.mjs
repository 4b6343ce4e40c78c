// What a webpack 5 app needs for nextscale (no loader or plugin): ES module output (the
// package uses top-level await and module workers). webpack emits the package's wasm files,
// its worker and its wasm-bindgen glue as assets from their `new URL(…, import.meta.url)`.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(fileURLToPath(import.meta.url));
export default {
  mode: 'production',
  entry: './main.js',
  output: { path: path.join(dir, 'dist'), filename: 'main.js', publicPath: 'auto', clean: true },
  experiments: { outputModule: true },
  performance: { hints: false },
};
