// Pretrained Inception-v3 features of images (scripts/fetch-inception.sh fetches the model).
//   NODE_PATH=$(bash scripts/fetch-inception.sh)/node_modules \
//     node scripts/inception-features.cjs IMAGES.u8 N SIZE OUT.f32 [imagenet|unit]
// IMAGES.u8 holds N RGB images of SIZE×SIZE, row-major, 8 bits. Each is resized to 299×299
// (bilinear), scaled to [-1, 1] (`imagenet`, Keras's Inception-v3 pre-processing, the default)
// or to [0, 1] (`unit`, what nsfwjs feeds its classifier), and run through the network.
// OUT.f32 gets N rows of 8,261 little-endian float32:
//   the spatial means of mixed0 … mixed5 (256 + 288 + 288 + 768 + 768 + 768 = 3,136), the blocks
//     with ImageNet weights (frozen in this model);
//   the means of mixed5 over 2×2 regions of its 17×17 grid (rows and columns 0–8 and 9–16;
//     4 × 768 = 3,072, region by region, top left first);
//   the spatial mean of mixed10 (2,048) and the five class probabilities.
// TFJS_BACKEND=cpu runs TensorFlow.js's plain JavaScript kernels instead of WebAssembly (slower;
// to check one against the other).
'use strict';
const fs = require('fs');
const tf = require('@tensorflow/tfjs');
require('@tensorflow/tfjs-backend-wasm');
const nsfwjs = require('nsfwjs');

async function main() {
  const [input, nArg, sizeArg, out, scaling = 'imagenet'] = process.argv.slice(2);
  const n = Number(nArg);
  const size = Number(sizeArg);
  if (!out || !Number.isSafeInteger(n) || n < 1 || !Number.isSafeInteger(size) || size < 1) {
    throw new Error('usage: inception-features.cjs IMAGES.u8 N SIZE OUT.f32 [imagenet|unit]');
  }
  if (scaling !== 'imagenet' && scaling !== 'unit') {
    throw new Error(`scaling must be imagenet or unit, not ${scaling}`);
  }
  const bytes = fs.readFileSync(input);
  const per = size * size * 3;
  if (bytes.length !== n * per) {
    throw new Error(`${input}: ${bytes.length} bytes, expected ${n} images of ${size}×${size}×3 (${n * per})`);
  }
  await tf.setBackend(process.env.TFJS_BACKEND || 'wasm');
  await tf.ready();
  const net = (await nsfwjs.load('InceptionV3', { size: 299, type: 'layers' })).model;
  const blocks = ['mixed0', 'mixed1', 'mixed2', 'mixed3', 'mixed4', 'mixed5', 'mixed10'];
  const heads = blocks.map((name) => net.getLayer(name).output);
  const sub = tf.model({ inputs: net.inputs, outputs: [...heads, net.outputs[0]] });
  const width = 3136 + 3072 + 2048 + 5;
  const result = new Float32Array(n * width);
  const batch = 8;
  const t0 = Date.now();
  for (let start = 0; start < n; start += batch) {
    const end = Math.min(start + batch, n);
    const rows = tf.tidy(() => {
      const u8 = tf.tensor4d(bytes.subarray(start * per, end * per), [end - start, size, size, 3], 'int32');
      let x = tf.image.resizeBilinear(u8.toFloat(), [299, 299]);
      x = scaling === 'imagenet' ? x.div(127.5).sub(1) : x.div(255);
      const outs = sub.predict(x);
      const probs = outs.pop();
      const m10 = outs.pop();
      const m5 = outs[outs.length - 1];
      const regions = [];
      for (const [y0, y1] of [[0, 9], [9, 17]]) {
        for (const [x0, x1] of [[0, 9], [9, 17]]) {
          regions.push(m5.slice([0, y0, x0, 0], [-1, y1 - y0, x1 - x0, -1]).mean([1, 2]));
        }
      }
      return tf.concat([...outs.map((o) => o.mean([1, 2])), ...regions, m10.mean([1, 2]), probs], 1);
    });
    result.set(await rows.data(), start * width);
    rows.dispose();
    if (end % 200 < batch || end === n) {
      process.stderr.write(`inception features ${end}/${n} (${((Date.now() - t0) / 1000).toFixed(0)} s)\n`);
    }
  }
  fs.writeFileSync(out, Buffer.from(result.buffer));
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
