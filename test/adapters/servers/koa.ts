import { createServer } from 'node:http';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import Koa, { type ParameterizedContext } from 'koa';
import { idempotency } from '../../../src/adapters/koa.js';
import { type ServerFactory, STREAM_CHUNKS, sleep } from './app.js';
import { listen } from './listen.js';

/**
 * Koa 3 with `idempotency()` first and handlers that read the request stream themselves or, with
 * `parserFirst`, after a small body parser that sets `ctx.request.body` and `ctx.request.rawBody`
 * the way @koa/bodyparser does.
 */
export function koaFactory({ parserFirst }: { parserFirst: boolean }): ServerFactory {
  return (app, options) => {
    const server = new Koa();
    server.silent = true;
    const parse = async (ctx: ParameterizedContext): Promise<unknown> => {
      const request = ctx.request as { body?: unknown };
      if (request.body !== undefined) return request.body;
      const raw = await text(ctx.req);
      try {
        return raw === '' ? null : JSON.parse(raw);
      } catch {
        ctx.throw(400, 'invalid JSON body');
      }
    };
    if (parserFirst) {
      server.use(async (ctx, next) => {
        if (ctx.is('application/json')) {
          const raw = await text(ctx.req);
          const request = ctx.request as { body?: unknown; rawBody?: string };
          request.rawBody = raw;
          try {
            request.body = JSON.parse(raw);
          } catch {
            ctx.throw(400, 'invalid JSON body');
          }
        }
        await next();
      });
    }
    server.use(idempotency(options));
    server.use(async (ctx) => {
      const key = ctx.get('idempotency-key') || undefined;
      const route = ctx.path.slice(1);
      if (route === 'orders') {
        const body = await parse(ctx);
        const n = app.count('orders', key);
        ctx.status = ctx.method === 'GET' ? 200 : 201;
        ctx.set('x-custom', 'orders');
        ctx.body = { n, key: ctx.state.idempotency?.key ?? '', body };
      } else if (route === 'slow') {
        const n = app.count('slow', key);
        await app.gate();
        ctx.status = 201;
        ctx.body = { n };
      } else if (route === 'first-held') {
        const n = app.count('first-held', key);
        if (n === 1) await app.gate();
        ctx.status = 201;
        ctx.body = { n };
      } else if (route === 'flaky') {
        const n = app.count('flaky', key);
        if (n % 2 === 1) throw new Error('flaky handler failed');
        ctx.status = 201;
        ctx.body = { n };
      } else if (route === 'unavailable') {
        const n = app.count('unavailable', key);
        ctx.status = n % 2 === 1 ? 503 : 201;
        ctx.body = { n };
      } else if (route === 'stream') {
        app.count('stream', key);
        ctx.status = 200;
        ctx.type = 'text/plain; charset=utf-8';
        ctx.set('x-custom', 'stream');
        ctx.body = Readable.from(
          (async function* chunks() {
            for (const chunk of STREAM_CHUNKS) {
              yield Buffer.from(chunk);
              await sleep(2);
            }
          })(),
        );
      }
    });
    return listen(createServer(server.callback()));
  };
}
