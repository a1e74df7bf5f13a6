/** The Koa middleware's own surface, against a real loopback server. */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import Koa from 'koa';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency as koaIdempotency } from '../../src/adapters/koa.js';
import { createIdempotency } from '../../src/engine/engine.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import type { RunningServer } from './servers/app.js';
import { listen } from './servers/listen.js';

let server: RunningServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function post(path: string, key: string) {
  const response = await request(`${server?.url}${path}`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{"a":1}',
  });
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

describe('koa middleware', () => {
  it('puts the context in ctx.state.idempotency and runs once when mounted twice', async () => {
    const app = new Koa();
    const engine = createIdempotency({ store: createMemoryStore() });
    let runs = 0;
    app.use(koaIdempotency({ idempotency: engine }));
    app.use(koaIdempotency({ idempotency: engine }));
    app.use(async (ctx) => {
      runs++;
      ctx.status = 201;
      ctx.body = { key: ctx.state.idempotency?.key, step: await ctx.state.idempotency?.step('s', () => 5) };
    });
    server = await listen(createServer(app.callback()));
    const key = randomUUID();
    const first = await post('/', key);
    expect(JSON.parse(first.text)).toEqual({ key, step: 5 });
    expect((await post('/', key)).headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });
});
