// The smallest app a user would write: import the package, load a model, draw one image.
import { Generator } from 'nextscale';

const status = document.getElementById('status');
try {
  const gen = await Generator.load('digits.nsp', { device: 'wasm', cache: false });
  const img = await gen.generate({ classLabel: 7, seed: 2 });
  document.getElementById('out').getContext('2d').putImageData(img.toImageData(), 0, 0);
  const png = await img.toBlob();
  status.textContent = `a 7 on ${img.backend}, ${gen.info.threads} thread(s) (${png.size}-byte PNG)`;
  window.nextscaleResult = {
    tokens: Array.from(img.tokens), backend: img.backend, png: png.size,
    threads: gen.info.threads, threadsReason: gen.info.threadsReason,
  };
} catch (e) {
  status.textContent = String(e);
  window.nextscaleResult = { error: String(e) };
}
