import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { stream } from 'hono/streaming';
import { validator } from 'hono/validator';
import { idempotency } from '../../../src/adapters/hono.js';
import { type ServerFactory, STREAM_CHUNKS, sleep } from './app.js';

/**
 * Hono 4 on Node through @hono/node-server, with `idempotency()` first and routes that read the
 * body with `c.req.json()`, or, with `validatorFirst`, after a JSON validator that already read it.
 */
export function honoFactory({ validatorFirst }: { validatorFirst: boolean }): ServerFactory {
  return (app, options) => {
    const server = new Hono();
    server.onError((error, c) =>
      error instanceof HTTPException ? error.getResponse() : c.text('the handler failed', 500),
    );
    if (validatorFirst)
      server.use(
        '*',
        validator('json', (value) => value),
      );
    server.use('*', idempotency(options));
    const key = (c: Context) => c.req.header('idempotency-key');

    const orders = async (c: Context) => {
      let body: unknown = null;
      if (c.req.method !== 'GET') {
        try {
          body = await c.req.json();
        } catch {
          return c.json({ error: 'invalid json' }, 400);
        }
      }
      const n = app.count('orders', key(c));
      c.header('x-custom', 'orders');
      return c.json({ n, key: c.var.idempotency.key, body }, c.req.method === 'GET' ? 200 : 201);
    };
    server.get('/orders', orders);
    server.post('/orders', orders);
    server.post('/slow', async (c) => {
      const n = app.count('slow', key(c));
      await app.gate();
      return c.json({ n }, 201);
    });
    server.post('/first-held', async (c) => {
      const n = app.count('first-held', key(c));
      if (n === 1) await app.gate();
      return c.json({ n }, 201);
    });
    server.post('/flaky', (c) => {
      const n = app.count('flaky', key(c));
      if (n % 2 === 1) throw new Error('flaky handler failed');
      return c.json({ n }, 201);
    });
    server.post('/unavailable', (c) => {
      const n = app.count('unavailable', key(c));
      return c.json({ n }, n % 2 === 1 ? 503 : 201);
    });
    server.post('/stream', (c) => {
      app.count('stream', key(c));
      c.header('content-type', 'text/plain; charset=utf-8');
      c.header('x-custom', 'stream');
      return stream(c, async (out) => {
        for (const chunk of STREAM_CHUNKS) {
          await out.write(chunk);
          await sleep(2);
        }
      });
    });

    return new Promise((resolve) => {
      const listening = serve({ fetch: server.fetch, port: 0, hostname: '127.0.0.1' }, (info: AddressInfo) => {
        resolve({
          url: `http://127.0.0.1:${info.port}`,
          close: () =>
            new Promise<void>((done) => {
              listening.close(() => done());
              if ('closeAllConnections' in listening) listening.closeAllConnections();
            }),
        });
      });
    });
  };
}
