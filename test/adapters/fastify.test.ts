/** The Fastify plugin's own surface: route opt-in/opt-out, per-route options, decorators. */
import { randomUUID } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../../src/adapters/fastify.js';
import { createIdempotency } from '../../src/engine/engine.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import { IdempotencyConfigInvalidError } from '../../src/vocabulary/index.js';

let app: FastifyInstance;
afterEach(() => app?.close());

async function twice(method: 'POST' | 'PUT', url: string) {
  const key = randomUUID();
  const headers = { 'idempotency-key': key, 'content-type': 'application/json' };
  const first = await app.inject({ method, url, headers, payload: '{"a":1}' });
  const second = await app.inject({ method, url, headers, payload: '{"a":1}' });
  return { first, second, replayed: second.headers['idempotent-replayed'] === 'true' };
}

/** POSTs over a real socket; the response's header lines as sent (name lower-cased, in order). */
function rawPost(server: FastifyInstance, path: string, key: string): Promise<[string, string][]> {
  const { port } = server.server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const req = httpRequest({ port, path, method: 'POST', headers: { 'idempotency-key': key } }, (res) => {
      const lines: [string, string][] = [];
      for (let i = 0; i < res.rawHeaders.length; i += 2) {
        lines.push([(res.rawHeaders[i] as string).toLowerCase(), res.rawHeaders[i + 1] as string]);
      }
      res.resume().on('end', () => resolve(lines));
    });
    req.on('error', reject);
    req.end();
  });
}

const valuesOf = (lines: [string, string][], name: string) => lines.filter(([n]) => n === name).map(([, v]) => v);

function routes(server: FastifyInstance, counter: Map<string, number>) {
  const handler = (name: string) => async () => {
    const n = (counter.get(name) ?? 0) + 1;
    counter.set(name, n);
    return { n };
  };
  server.post('/default', handler('default'));
  server.post('/off', { config: { idempotency: false } }, handler('off'));
  server.post('/on', { config: { idempotency: true } }, handler('on'));
  server.put('/put', { config: { idempotency: { methods: ['PUT'] } } }, handler('put'));
  server.post('/required', { config: { idempotency: { required: true } } }, handler('required'));
}

describe('fastify plugin', () => {
  it('protects every route by default and lets a route opt out', async () => {
    app = Fastify();
    await app.register(idempotency, { store: createMemoryStore() });
    const counter = new Map<string, number>();
    routes(app, counter);
    expect((await twice('POST', '/default')).replayed).toBe(true);
    expect((await twice('POST', '/off')).replayed).toBe(false);
    expect(counter.get('default')).toBe(1);
    expect(counter.get('off')).toBe(2);
  });

  it('with global: false, protects only the routes that opt in', async () => {
    app = Fastify();
    await app.register(idempotency, { store: createMemoryStore(), global: false });
    const counter = new Map<string, number>();
    routes(app, counter);
    expect((await twice('POST', '/default')).replayed).toBe(false);
    expect((await twice('POST', '/on')).replayed).toBe(true);
    expect((await twice('PUT', '/put')).replayed).toBe(true);
  });

  it('gives a route with options an engine of its own over the same store', async () => {
    app = Fastify();
    await app.register(idempotency, { store: createMemoryStore() });
    routes(app, new Map());
    const missing = await app.inject({ method: 'POST', url: '/required', payload: { a: 1 } });
    expect(missing.statusCode).toBe(400);
    expect(missing.json()).toMatchObject({ code: 'IDEMPO_KEY_MISSING' });
    expect((await app.inject({ method: 'POST', url: '/default', payload: { a: 1 } })).statusCode).toBe(200);
  });

  it('shares an engine passed as { idempotency } and decorates the instance with it', async () => {
    const engine = createIdempotency({ store: createMemoryStore() });
    app = Fastify();
    await app.register(idempotency, { idempotency: engine });
    expect(app.idempotency).toBe(engine);
    app.post('/ctx', async (request) => ({ key: request.idempotency.key }));
    const reply = await app.inject({ method: 'POST', url: '/ctx', headers: { 'idempotency-key': 'k-1' } });
    expect(reply.json()).toEqual({ key: 'k-1' });
    const unkeyed = await app.inject({ method: 'POST', url: '/ctx' });
    expect(unkeyed.json()).toEqual({ key: '' });
  });

  it('refuses route options without a store when the plugin got a ready engine', async () => {
    app = Fastify();
    await app.register(idempotency, { idempotency: createIdempotency({ store: createMemoryStore() }) });
    expect(() => app.post('/x', { config: { idempotency: { required: true } } }, async () => ({}))).toThrow(
      IdempotencyConfigInvalidError,
    );
  });

  it('replays every header line: a repeated name with all its values, and one Date', async () => {
    app = Fastify();
    await app.register(idempotency, { store: createMemoryStore() });
    app.post('/multi', async (_request, reply) => {
      reply.header('x-multi', ['a', 'b']).header('x-single', 'one');
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const key = randomUUID();
    const first = await rawPost(app, '/multi', key);
    const replay = await rawPost(app, '/multi', key);
    expect(valuesOf(replay, 'idempotent-replayed')).toEqual(['true']);
    for (const lines of [first, replay]) {
      expect(valuesOf(lines, 'x-multi')).toEqual(['a', 'b']);
      expect(valuesOf(lines, 'x-single')).toEqual(['one']);
      expect(valuesOf(lines, 'date')).toHaveLength(1);
    }
  });

  it('replays a Date the handler set as it was, alone, when replayHeaders keeps it', async () => {
    app = Fastify();
    await app.register(idempotency, { store: createMemoryStore(), replayHeaders: { exclude: [] } });
    app.post('/dated', async (_request, reply) => {
      reply.header('date', 'Tue, 01 Dec 2026 10:00:00 GMT');
      return { ok: true };
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const key = randomUUID();
    await rawPost(app, '/dated', key);
    const replay = await rawPost(app, '/dated', key);
    expect(valuesOf(replay, 'idempotent-replayed')).toEqual(['true']);
    expect(valuesOf(replay, 'date')).toEqual(['Tue, 01 Dec 2026 10:00:00 GMT']);
  });
});
