import { createServer } from 'node:http';
import express, { type Request, type Response } from 'express';
import { idempotency } from '../../../src/adapters/express.js';
import { type ServerFactory, STREAM_CHUNKS, sleep } from './app.js';
import { listen } from './listen.js';

/**
 * Express 5 with `idempotency()` mounted before `express.json()` (raw bytes read and handed back
 * to the parser) or, with `parserFirst`, after it (the parsed `req.body` is fingerprinted).
 */
export function expressFactory({ parserFirst }: { parserFirst: boolean }): ServerFactory {
  return (app, options) => {
    const server = express();
    if (parserFirst) server.use(express.json());
    server.use(idempotency(options));
    if (!parserFirst) server.use(express.json());
    const key = (req: Request) => req.get('idempotency-key');

    const orders = (req: Request, res: Response) => {
      const n = app.count('orders', key(req));
      res
        .status(req.method === 'GET' ? 200 : 201)
        .set('x-custom', 'orders')
        .json({ n, key: req.idempotency?.key ?? '', body: req.body ?? null });
    };
    server.get('/orders', orders);
    server.post('/orders', orders);
    server.post('/slow', async (req, res) => {
      const n = app.count('slow', key(req));
      await app.gate();
      res.status(201).json({ n });
    });
    server.post('/first-held', async (req, res) => {
      const n = app.count('first-held', key(req));
      if (n === 1) await app.gate();
      res.status(201).json({ n });
    });
    server.post('/flaky', async (req, res) => {
      const n = app.count('flaky', key(req));
      if (n % 2 === 1) throw new Error('flaky handler failed');
      res.status(201).json({ n });
    });
    server.post('/unavailable', (req, res) => {
      const n = app.count('unavailable', key(req));
      res.status(n % 2 === 1 ? 503 : 201).json({ n });
    });
    server.post('/stream', async (req, res) => {
      app.count('stream', key(req));
      res.status(200).type('text/plain').set('x-custom', 'stream');
      for (const chunk of STREAM_CHUNKS) {
        res.write(chunk);
        await sleep(2);
      }
      res.end();
    });
    // Express's default error handler answers a thrown error with 500 and a JSON syntax error with 400.
    return listen(createServer(server));
  };
}
