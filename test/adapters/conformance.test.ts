/**
 * The protocol conformance suite: every row of the DESIGN protocol table, the 200-request race,
 * byte-for-byte replay (headers the framework sets included) and bad input, run through every
 * adapter against a real server on loopback. One suite; each adapter only supplies a server
 * factory under `./servers/`.
 */
import { randomUUID } from 'node:crypto';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { IdempotencyOptions } from '../../src/engine/types.js';
import type { IdempotencyStore } from '../../src/stores/contract.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import {
  createTestApp,
  type RunningServer,
  type ServerFactory,
  STREAM_CHUNKS,
  sleep,
  type TestApp,
} from './servers/app.js';
import { expressFactory } from './servers/express.js';
import { startFastify } from './servers/fastify.js';
import { honoFactory } from './servers/hono.js';
import { koaFactory } from './servers/koa.js';
import { nestFactory } from './servers/nestjs.js';
import { startNode } from './servers/node.js';

interface AdapterCase {
  name: string;
  start: ServerFactory;
}

const adapters: AdapterCase[] = [
  { name: 'node:http', start: startNode },
  { name: 'express, idempo before express.json()', start: expressFactory({ parserFirst: false }) },
  { name: 'express, idempo after express.json()', start: expressFactory({ parserFirst: true }) },
  { name: 'fastify', start: startFastify },
  { name: 'hono on @hono/node-server', start: honoFactory({ validatorFirst: false }) },
  { name: 'hono, idempo after a JSON validator', start: honoFactory({ validatorFirst: true }) },
  { name: 'koa, handlers read the stream', start: koaFactory({ parserFirst: false }) },
  { name: 'koa, idempo after a body parser', start: koaFactory({ parserFirst: true }) },
  {
    name: 'nestjs on express, @Idempotent() controller',
    start: nestFactory({ platform: 'express', routes: 'decorator' }),
  },
  { name: 'nestjs on fastify, global interceptor', start: nestFactory({ platform: 'fastify', routes: 'global' }) },
];

/** Small enough that the oversized-body case needs no megabytes, larger than every body parser's default limit below it. */
const MAX_BODY = 64 * 1024;

const brokenStore: IdempotencyStore = {
  claim: () => Promise.reject(new Error('store unreachable')),
  complete: () => Promise.reject(new Error('store unreachable')),
  release: () => Promise.reject(new Error('store unreachable')),
  renew: () => Promise.reject(new Error('store unreachable')),
  saveStep: () => Promise.reject(new Error('store unreachable')),
};

interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json(): Record<string, unknown>;
}

interface Send {
  method?: string;
  key?: string;
  body?: unknown;
  raw?: string | Buffer;
  headers?: Record<string, string>;
}

async function send(base: string, path: string, options: Send = {}): Promise<Reply> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.key !== undefined) headers['idempotency-key'] = options.key;
  let body: string | Buffer | undefined;
  if (options.raw !== undefined) body = options.raw;
  else if (options.body !== undefined) body = JSON.stringify(options.body);
  if (body !== undefined) headers['content-type'] ??= 'application/json';
  const response = await request(base + path, {
    method: (options.method ?? 'POST') as 'POST',
    headers,
    ...(body === undefined ? {} : { body }),
  });
  const bytes = Buffer.from(await response.body.arrayBuffer());
  const text = bytes.toString('utf8');
  return {
    status: response.statusCode,
    headers: response.headers,
    body: bytes,
    text,
    json: () => JSON.parse(text) as Record<string, unknown>,
  };
}

/** Headers that describe the connection or the moment, not the response. */
const UNSTABLE = new Set([
  'date',
  'connection',
  'keep-alive',
  'transfer-encoding',
  'content-length',
  'idempotent-replayed',
]);

function stableHeaders(reply: Reply): Record<string, string | string[] | undefined> {
  return Object.fromEntries(
    Object.entries(reply.headers)
      .filter(([name]) => !UNSTABLE.has(name))
      .sort(([a], [b]) => a.localeCompare(b)),
  );
}

function expectReplayOf(replay: Reply, first: Reply): void {
  expect(replay.headers['idempotent-replayed']).toBe('true');
  expect(replay.status).toBe(first.status);
  expect(replay.body.equals(first.body)).toBe(true);
  expect(stableHeaders(replay)).toEqual(stableHeaders(first));
  if (first.headers['content-length'] !== undefined) {
    expect(replay.headers['content-length']).toBe(first.headers['content-length']);
  }
  expect(replay.headers.date).toBeDefined();
}

function expectProblem(reply: Reply, status: number, code: string): void {
  expect(reply.status).toBe(status);
  expect(String(reply.headers['content-type'])).toMatch(/^application\/problem\+json/);
  expect(reply.json()).toMatchObject({ status, code });
  expect(reply.headers['idempotent-replayed']).toBeUndefined();
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited > 5_000) throw new Error(`timed out waiting until ${what}`);
    await sleep(5);
  }
}

const key = () => `key-${randomUUID()}`;

describe.each(adapters)('$name', ({ start }) => {
  const app: TestApp = createTestApp();
  const waitApp: TestApp = createTestApp();
  let plain: RunningServer;
  let strict: RunningServer;
  let broken: RunningServer;
  let base: string;
  const started: RunningServer[] = [];

  beforeAll(async () => {
    const common: Partial<IdempotencyOptions> = { maxBodyBytes: MAX_BODY };
    plain = await start(app, { store: createMemoryStore(), ...common });
    strict = await start(waitApp, { store: createMemoryStore(), required: true, concurrent: 'wait', ...common });
    broken = await start(createTestApp(), { store: brokenStore, ...common });
    started.push(plain, strict, broken);
    base = plain.url;
  });

  afterAll(async () => {
    await Promise.all(started.map((server) => server.close()));
  });

  describe('pass-through', () => {
    it('passes a method outside `methods` through untouched, key or not', async () => {
      const k = key();
      const first = await send(base, '/orders', { method: 'GET', key: k });
      const second = await send(base, '/orders', { method: 'GET', key: k });
      expect([first.status, second.status]).toEqual([200, 200]);
      expect(second.headers['idempotent-replayed']).toBeUndefined();
      expect(app.calls('orders', k)).toBe(2);
    });

    it('passes a request without a key through when keys are optional', async () => {
      const body = { tag: randomUUID() };
      const first = await send(base, '/orders', { body });
      const second = await send(base, '/orders', { body });
      expect([first.status, second.status]).toEqual([201, 201]);
      expect(second.headers['idempotent-replayed']).toBeUndefined();
      expect(first.json().body).toEqual(body);
      expect(first.json().key).toBe('');
    });

    it('answers 400 problem+json to a request without a key when keys are required', async () => {
      const reply = await send(strict.url, '/orders', { body: { a: 1 } });
      expectProblem(reply, 400, 'IDEMPO_KEY_MISSING');
      expect(waitApp.calls('orders', undefined)).toBe(0);
    });
  });

  describe('malformed keys', () => {
    it.each([
      ['empty', ''],
      ['with a space', 'two words'],
      ['joined from repeated headers', 'a,b'],
      ['over maxKeyLength', 'k'.repeat(256)],
      ['huge (8 KiB)', 'k'.repeat(8 * 1024)],
    ])('answers 400 problem+json to a key that is %s, running nothing', async (_what, bad) => {
      const reply = await send(base, '/orders', { key: bad, body: { a: 1 } });
      expectProblem(reply, 400, 'IDEMPO_KEY_INVALID');
      expect(app.calls('orders', bad)).toBe(0);
    });

    it('accepts a Structured Field string key and treats "abc" as abc', async () => {
      const k = key();
      const first = await send(base, '/orders', { key: `"${k}"`, body: { a: 1 } });
      expect(first.status).toBe(201);
      expect(first.json().key).toBe(k);
      const replay = await send(base, '/orders', { key: k, body: { a: 1 } });
      expectReplayOf(replay, first);
    });
  });

  describe('first request and replay', () => {
    it('runs the handler for the first request and returns its response, unmarked', async () => {
      const k = key();
      const reply = await send(base, '/orders', { key: k, body: { amount: 10 } });
      expect(reply.status).toBe(201);
      expect(reply.json()).toEqual({ n: 1, key: k, body: { amount: 10 } });
      expect(reply.headers['x-custom']).toBe('orders');
      expect(reply.headers['idempotent-replayed']).toBeUndefined();
      expect(app.calls('orders', k)).toBe(1);
    });

    it('replays status, headers and body byte for byte, marked, without running the handler', async () => {
      const k = key();
      const first = await send(base, '/orders', { key: k, body: { amount: 10, currency: 'eur' } });
      const replay = await send(base, '/orders', { key: k, body: { amount: 10, currency: 'eur' } });
      expectReplayOf(replay, first);
      expect(replay.headers['x-custom']).toBe('orders');
      expect(app.calls('orders', k)).toBe(1);
    });

    it('replays a JSON body sent with its keys in another order', async () => {
      const k = key();
      const first = await send(base, '/orders', { key: k, raw: '{"amount":10,"currency":"eur"}' });
      const replay = await send(base, '/orders', { key: k, raw: '{ "currency": "eur", "amount": 10 }' });
      expectReplayOf(replay, first);
      expect(app.calls('orders', k)).toBe(1);
    });

    it('replays a response the handler streamed in chunks', async () => {
      const k = key();
      const first = await send(base, '/stream', { key: k, body: {} });
      expect(first.status).toBe(200);
      expect(first.text).toBe(STREAM_CHUNKS.join(''));
      const replay = await send(base, '/stream', { key: k, body: {} });
      expectReplayOf(replay, first);
      expect(app.calls('stream', k)).toBe(1);
    });
  });

  describe('concurrent duplicates', () => {
    it('answers 409 problem+json with Retry-After while the first is running, then replays', async () => {
      const k = key();
      app.closeGate();
      const first = send(base, '/slow', { key: k, body: { a: 1 } });
      await until(() => app.calls('slow', k) === 1, 'the first request runs');
      const duplicate = await send(base, '/slow', { key: k, body: { a: 1 } });
      expectProblem(duplicate, 409, 'IDEMPO_CONFLICT');
      expect(Number(duplicate.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      app.openGate();
      const original = await first;
      expect(original.status).toBe(201);
      expectReplayOf(await send(base, '/slow', { key: k, body: { a: 1 } }), original);
      expect(app.calls('slow', k)).toBe(1);
    });

    it("with concurrent: 'wait', holds the duplicate and replays the original's response", async () => {
      const k = key();
      waitApp.closeGate();
      const first = send(strict.url, '/slow', { key: k, body: { a: 1 } });
      await until(() => waitApp.calls('slow', k) === 1, 'the first request runs');
      const duplicate = send(strict.url, '/slow', { key: k, body: { a: 1 } });
      await sleep(30);
      waitApp.openGate();
      const [original, waited] = await Promise.all([first, duplicate]);
      expect(original.status).toBe(201);
      expectReplayOf(waited, original);
      expect(waitApp.calls('slow', k)).toBe(1);
    });
  });

  describe('mismatch', () => {
    it('answers 422 problem+json to the key reused with another body, running and overwriting nothing', async () => {
      const k = key();
      const first = await send(base, '/orders', { key: k, body: { amount: 10 } });
      const other = await send(base, '/orders', { key: k, body: { amount: 99 } });
      expectProblem(other, 422, 'IDEMPO_MISMATCH');
      expect(app.calls('orders', k)).toBe(1);
      expectReplayOf(await send(base, '/orders', { key: k, body: { amount: 10 } }), first);
    });

    it('answers 422 to the key reused on another path', async () => {
      const k = key();
      await send(base, '/orders', { key: k, body: { amount: 10 } });
      expectProblem(await send(base, '/unavailable', { key: k, body: { amount: 10 } }), 422, 'IDEMPO_MISMATCH');
      expect(app.calls('unavailable', k)).toBe(0);
    });

    it('answers 422 to the key reused by another caller (Authorization differs)', async () => {
      const k = key();
      const headers = { authorization: 'Bearer alice' };
      await send(base, '/orders', { key: k, body: { amount: 10 }, headers });
      const stranger = await send(base, '/orders', {
        key: k,
        body: { amount: 10 },
        headers: { authorization: 'Bearer mallory' },
      });
      expectProblem(stranger, 422, 'IDEMPO_MISMATCH');
    });
  });

  describe('failures release the key', () => {
    it('releases the key when the handler throws, so the retry runs', async () => {
      const k = key();
      const failed = await send(base, '/flaky', { key: k, body: { a: 1 } });
      expect(failed.status).toBeGreaterThanOrEqual(500);
      expect(failed.headers['idempotent-replayed']).toBeUndefined();
      const retry = await send(base, '/flaky', { key: k, body: { a: 1 } });
      expect(retry.status).toBe(201);
      expect(retry.json().n).toBe(2);
      expect(retry.headers['idempotent-replayed']).toBeUndefined();
      expectReplayOf(await send(base, '/flaky', { key: k, body: { a: 1 } }), retry);
      expect(app.calls('flaky', k)).toBe(2);
    });

    it('releases the key on a 5xx response, so the retry runs', async () => {
      const k = key();
      const failed = await send(base, '/unavailable', { key: k, body: { a: 1 } });
      expect(failed.status).toBe(503);
      expect(failed.json().n).toBe(1);
      const retry = await send(base, '/unavailable', { key: k, body: { a: 1 } });
      expect(retry.status).toBe(201);
      expect(retry.json().n).toBe(2);
      expect(app.calls('unavailable', k)).toBe(2);
    });

    it('answers 503 problem+json with Retry-After when the store fails, running nothing', async () => {
      const k = key();
      const reply = await send(broken.url, '/orders', { key: k, body: { a: 1 } });
      expectProblem(reply, 503, 'IDEMPO_STORE_UNAVAILABLE');
      expect(Number(reply.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      const unkeyed = await send(broken.url, '/orders', { body: { a: 1 } });
      expect(unkeyed.status).toBe(201);
    });
  });

  describe('the 200-request race on one new key', () => {
    it('runs the handler exactly once; the others get 409', async () => {
      const k = key();
      app.closeGate();
      let settled = 0;
      const replies = Array.from({ length: 200 }, () =>
        send(base, '/slow', { key: k, body: { race: true } }).finally(() => {
          settled++;
        }),
      );
      await until(() => settled >= 199, '199 duplicates are answered');
      app.openGate();
      const statuses = (await Promise.all(replies)).map((reply) => reply.status).sort();
      expect(statuses.filter((status) => status === 201)).toHaveLength(1);
      expect(statuses.filter((status) => status === 409)).toHaveLength(199);
      expect(app.calls('slow', k)).toBe(1);
    });

    it("with concurrent: 'wait', every caller gets the same 2xx body from one execution", async () => {
      const k = key();
      waitApp.slowMs = 100;
      try {
        const replies = await Promise.all(
          Array.from({ length: 200 }, () => send(strict.url, '/slow', { key: k, body: { race: true } })),
        );
        expect(new Set(replies.map((reply) => reply.status))).toEqual(new Set([201]));
        expect(new Set(replies.map((reply) => reply.text)).size).toBe(1);
        expect(replies.filter((reply) => reply.headers['idempotent-replayed'] === undefined)).toHaveLength(1);
        expect(waitApp.calls('slow', k)).toBe(1);
      } finally {
        waitApp.slowMs = 0;
      }
    });
  });

  describe('bad input', () => {
    it('answers an invalid JSON body with a 400 and stays healthy', async () => {
      const k = key();
      const first = await send(base, '/orders', { key: k, raw: '{"amount": 10' });
      expect(first.status).toBe(400);
      const again = await send(base, '/orders', { key: k, raw: '{"amount": 10' });
      expect(again.status).toBe(400);
      expect(app.calls('orders', k)).toBe(0);
      expect((await send(base, '/orders', { key: key(), body: { ok: true } })).status).toBe(201);
    });

    it('answers 413 to a keyed body over maxBodyBytes, running nothing', async () => {
      const k = key();
      const reply = await send(base, '/orders', { key: k, raw: JSON.stringify({ pad: 'x'.repeat(MAX_BODY + 1_000) }) });
      expect(reply.status).toBe(413);
      expect(app.calls('orders', k)).toBe(0);
      expect((await send(base, '/orders', { key: key(), body: { ok: true } })).status).toBe(201);
    });
  });
});
