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

export function startServer(root) {
  const stats = { hugeAborted: false, hugeSent: 0 };
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
    const file = path.join(root, decodeURIComponent(url.pathname));
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
    });
    res.end(body);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, stats, base: `http://127.0.0.1:${server.address().port}` }));
  });
}
