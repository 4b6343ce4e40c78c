// A static file server for the browser tests, on 127.0.0.1 only, with a few test routes.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.json': 'application/json',
  '.css': 'text/css',
  '.png': 'image/png',
};

/** What a host sends so that a page may use SharedArrayBuffer (and so wasm threads). */
export const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
};

export function startServer(root) {
  const stats = { hugeAborted: false, hugeSent: 0, requests: {}, version: 1, fakes: {}, fakeSent: {} };
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    if (url.pathname === '/test/huge.bin') {
      // Announces 2 GiB, then trickles: a client that checks sizes must give up at once.
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(2 ** 31) });
      const chunk = Buffer.alloc(64 * 1024);
      const timer = setInterval(() => {
        if (stats.hugeSent >= 64 * 1024 * 64) return;
        res.write(chunk);
        stats.hugeSent += chunk.length;
      }, 50);
      const stop = () => {
        clearInterval(timer);
        stats.hugeAborted = true;
      };
      req.on('close', stop);
      res.on('close', stop);
      return;
    }
    // /test/fake/NAME: a pack header registered in stats.fakes (the rest of the announced
    // file trickles as zeros), for fit checks that must refuse before the weights download.
    if (url.pathname.startsWith('/test/fake/')) {
      const name = url.pathname.slice('/test/fake/'.length);
      const fake = stats.fakes[name];
      if (!fake) { res.writeHead(404); res.end(); return; }
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(fake.total) });
      res.write(fake.header);
      stats.fakeSent[name] = fake.header.length;
      const chunk = Buffer.alloc(64 * 1024);
      const timer = setInterval(() => {
        if (stats.fakeSent[name] >= 64 * 1024 * 64) return;
        res.write(chunk);
        stats.fakeSent[name] += chunk.length;
      }, 50);
      req.on('close', () => clearInterval(timer));
      res.on('close', () => clearInterval(timer));
      return;
    }
    // /test/flaky/NAME: the first request gets an HTML error page with status 200 (as some
    // hosts answer for a missing file), later ones the real file www/models/NAME.
    // /test/versioned.nsp: one of two packs, chosen by stats.version, with an ETag.
    if (url.pathname.startsWith('/test/flaky/') || url.pathname === '/test/versioned.nsp') {
      let name = url.pathname.slice('/test/flaky/'.length);
      if (url.pathname === '/test/versioned.nsp') name = stats.version === 2 ? 'tiny-random-q4.nsp' : 'tiny-random-q8.nsp';
      stats.requests[url.pathname] = (stats.requests[url.pathname] ?? 0) + 1;
      if (url.pathname.startsWith('/test/flaky/') && stats.requests[url.pathname] === 1) {
        const html = Buffer.from('<!doctype html><title>Not found</title><p>Sorry.');
        res.writeHead(200, { 'Content-Type': 'text/html', 'Content-Length': String(html.length) });
        res.end(html);
        return;
      }
      const body = fs.readFileSync(path.join(root, 'www/models', path.basename(name)));
      const etag = `"v${stats.version ?? 1}-${body.length}"`;
      if (req.headers['if-none-match'] === etag) {
        res.writeHead(304, { ETag: etag });
        res.end();
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(body.length), ETag: etag });
      res.end(body);
      return;
    }
    // /iso/…: the same files with the headers that make a page cross-origin isolated (the
    // threaded CPU module needs SharedArrayBuffer).
    const isolated = url.pathname.startsWith('/iso/');
    const rel = isolated ? url.pathname.slice('/iso'.length) : url.pathname;
    const file = path.join(root, decodeURIComponent(rel));
    if (!file.startsWith(root) || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    const body = fs.readFileSync(file);
    res.writeHead(200, {
      'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream',
      'Content-Length': String(body.length),
      'Cache-Control': 'no-store',
      ...(isolated ? ISOLATION_HEADERS : {}),
    });
    res.end(body);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, stats, base: `http://127.0.0.1:${server.address().port}` }));
  });
}
