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
import { createMemoryStore } from '../../src/stores/memory.js';
import type { IdempotencyStore } from '../../src/vocabulary/index.js';
import { type ControlledStore, controlledStore } from '../helpers/controlled-store.js';
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

/**
 * Who answers a keyed request whose JSON body is broken. idempo never parses a body to refuse it:
 * it fingerprints the bytes as they came (src/engine/fingerprint.ts), so the answer is the app's,
 * and what idempo does with it follows the protocol table:
 * - `stored`: idempo runs first and the route answers 400 itself; a 4xx is a result like any
 *   other, so it is stored and a retry gets it replayed, marked;
 * - `released`: idempo runs first and the route's parser throws (a 400 error); a handler that
 *   throws releases its key, so the retry runs again, and the key stays bound to those bytes;
 * - `before-idempo`: the framework's parser runs before idempo and answers; idempo never sees the
 *   request, so the key is not claimed and a valid request under it runs.
 */
type InvalidJson = 'stored' | 'released' | 'before-idempo';

/**
 * What the caller of a run that lost its lease gets: `409` (`IDEMPO_LEASE_LOST`) where the
 * framework's response is still unwritten when idempo refuses it, `broken` (the connection is
 * cut) where the framework called `writeHead()` before `end()`: from then on node:http cannot take
 * the head back, so the response is destroyed rather than ended with a success no retry replays.
 */
type LeaseLost = 409 | 'broken';

interface AdapterCase {
  name: string;
  start: ServerFactory;
  invalidJson: InvalidJson;
  leaseLost: LeaseLost;
}

const adapters: AdapterCase[] = [
  { name: 'node:http', start: startNode, invalidJson: 'stored', leaseLost: 'broken' },
  {
    name: 'express, idempo before express.json()',
    start: expressFactory({ parserFirst: false }),
    invalidJson: 'stored',
    leaseLost: 409,
  },
  {
    name: 'express, idempo after express.json()',
    start: expressFactory({ parserFirst: true }),
    invalidJson: 'before-idempo',
    leaseLost: 409,
  },
  { name: 'fastify', start: startFastify, invalidJson: 'before-idempo', leaseLost: 'broken' },
  {
    name: 'hono on @hono/node-server',
    start: honoFactory({ validatorFirst: false }),
    invalidJson: 'stored',
    leaseLost: 409,
  },
  {
    name: 'hono, idempo after a JSON validator',
    start: honoFactory({ validatorFirst: true }),
    invalidJson: 'before-idempo',
    leaseLost: 409,
  },
  {
    name: 'koa, handlers read the stream',
    start: koaFactory({ parserFirst: false }),
    invalidJson: 'released',
    leaseLost: 409,
  },
  {
    name: 'koa, idempo after a body parser',
    start: koaFactory({ parserFirst: true }),
    invalidJson: 'before-idempo',
    leaseLost: 409,
  },
  {
    name: 'nestjs on express, @Idempotent() controller',
    start: nestFactory({ platform: 'express', routes: 'decorator' }),
    invalidJson: 'before-idempo',
    leaseLost: 409,
  },
  {
    name: 'nestjs on fastify, global interceptor',
    start: nestFactory({ platform: 'fastify', routes: 'global' }),
    invalidJson: 'before-idempo',
    leaseLost: 'broken',
  },
];

/** Small enough that the oversized-body case needs no megabytes, larger than every body parser's default limit below it. */
const MAX_BODY = 64 * 1024;
/** The lease of the server whose store the lease and hang-up rows stall: short, so a lost lease takes no time. */
const LEASE_MS = 400;

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

/** Like {@link send}, but a response the server breaks (a reset, a body cut short) resolves as `{ broken }`. */
function sendOrBroken(base: string, path: string, options: Send = {}): Promise<Reply | { broken: unknown }> {
  return send(base, path, options).catch((error: unknown) => ({ broken: error }));
}

/** Sends, then sends again while the answer is 409 (the first run still finishing), for up to 3 s. */
async function sendUntilSettled(base: string, path: string, options: Send): Promise<Reply> {
  for (let waited = 0; ; waited += 20) {
    const reply = await send(base, path, options);
    if (reply.status !== 409 || waited > 3_000) return reply;
    await sleep(20);
  }
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let waited = 0; !condition(); waited += 5) {
    if (waited > 5_000) throw new Error(`timed out waiting until ${what}`);
    await sleep(5);
  }
}

const key = () => `key-${randomUUID()}`;

describe.each(adapters)('$name', ({ start, invalidJson, leaseLost }) => {
  const app: TestApp = createTestApp();
  const waitApp: TestApp = createTestApp();
  const leaseApp: TestApp = createTestApp();
  const stalled: ControlledStore = controlledStore(createMemoryStore());
  let plain: RunningServer;
  let strict: RunningServer;
  let broken: RunningServer;
  let leased: RunningServer;
  let base: string;
  const started: RunningServer[] = [];

  beforeAll(async () => {
    const common: Partial<IdempotencyOptions> = { maxBodyBytes: MAX_BODY };
    plain = await start(app, { store: createMemoryStore(), ...common });
    strict = await start(waitApp, { store: createMemoryStore(), required: true, concurrent: 'wait', ...common });
    broken = await start(createTestApp(), { store: brokenStore, ...common });
    leased = await start(leaseApp, { store: stalled, lease: LEASE_MS, ...common });
    started.push(plain, strict, broken, leased);
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
    it(`answers an invalid JSON body with a 400 (${invalidJson}) and stays healthy`, async () => {
      const k = key();
      const first = await send(base, '/orders', { key: k, raw: '{"amount": 10' });
      expect(first.status).toBe(400);
      // The 400 is the app's or its framework's, never one of idempo's problems.
      expect(first.headers['idempotent-replayed']).toBeUndefined();
      expect(first.text).not.toMatch(/IDEMPO_/);
      const again = await send(base, '/orders', { key: k, raw: '{"amount": 10' });
      expect(again.status).toBe(400);
      const valid = await send(base, '/orders', { key: k, body: { amount: 10 } });
      if (invalidJson === 'stored') {
        expectReplayOf(again, first);
      } else {
        expect(again.headers['idempotent-replayed']).toBeUndefined();
      }
      if (invalidJson === 'before-idempo') {
        // idempo never saw the broken request: the key is free, and a valid request under it runs.
        expect(valid.status).toBe(201);
        expect(valid.json()).toMatchObject({ n: 1, key: k });
        expect(app.calls('orders', k)).toBe(1);
      } else {
        // idempo claimed the key for the broken bytes: it stays bound to them.
        expectProblem(valid, 422, 'IDEMPO_MISMATCH');
        expect(app.calls('orders', k)).toBe(0);
      }
      expect((await send(base, '/orders', { key: key(), body: { ok: true } })).status).toBe(201);
    });

    it('answers 413 IDEMPO_BODY_TOO_LARGE to a keyed body over maxBodyBytes, running nothing', async () => {
      const k = key();
      const reply = await send(base, '/orders', { key: k, raw: JSON.stringify({ pad: 'x'.repeat(MAX_BODY + 1_000) }) });
      expectProblem(reply, 413, 'IDEMPO_BODY_TOO_LARGE');
      expect(app.calls('orders', k)).toBe(0);
      expect((await send(base, '/orders', { key: key(), body: { ok: true } })).status).toBe(201);
    });
  });

  describe('a lost lease', () => {
    it(`answers the late caller ${leaseLost === 409 ? '409 IDEMPO_LEASE_LOST' : 'with a broken response'} once a retry took its key over; the retry’s response is replayed`, async () => {
      const k = key();
      leaseApp.closeGate();
      const late = sendOrBroken(leased.url, '/first-held', { key: k, body: { a: 1 } });
      try {
        await until(() => leaseApp.calls('first-held', k) === 1, 'the first request runs');
        // The owner is cut off from the store: its renewals fail and its lease runs out while its handler works.
        stalled.renewalsFail = true;
        await sleep(LEASE_MS + 150);
        const retry = await send(leased.url, '/first-held', { key: k, body: { a: 1 } });
        expect(retry.status).toBe(201);
        expect(retry.json()).toEqual({ n: 2 });
        expect(retry.headers['idempotent-replayed']).toBeUndefined();
        stalled.renewalsFail = false;
        leaseApp.openGate();

        const answer = await late;
        if (leaseLost === 409) {
          if ('broken' in answer)
            throw new Error(`expected idempo's 409, got a broken response: ${String(answer.broken)}`);
          expectProblem(answer, 409, 'IDEMPO_LEASE_LOST');
          expect(Number(answer.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        } else {
          // Never the late run's own clean 201.
          expect(answer).toHaveProperty('broken');
        }
        for (let i = 0; i < 2; i++) {
          expectReplayOf(await send(leased.url, '/first-held', { key: k, body: { a: 1 } }), retry);
        }
        expect(leaseApp.calls('first-held', k)).toBe(2);
      } finally {
        stalled.renewalsFail = false;
        leaseApp.openGate();
        await late;
      }
    });
  });

  describe('a client that hangs up', () => {
    it('does not stop the handler: it runs once, and the retry replays its result', async () => {
      const k = key();
      leaseApp.closeGate();
      const controller = new AbortController();
      const gone = request(`${leased.url}/first-held`, {
        method: 'POST',
        headers: { 'idempotency-key': k, 'content-type': 'application/json' },
        body: JSON.stringify({ a: 1 }),
        signal: controller.signal,
      }).then(
        () => 'answered',
        () => 'aborted',
      );
      try {
        await until(() => leaseApp.calls('first-held', k) === 1, 'the first request runs');
        controller.abort();
        expect(await gone).toBe('aborted');
        await sleep(50); // the server sees the connection close while the handler still waits
        leaseApp.openGate();
        const retry = await sendUntilSettled(leased.url, '/first-held', { key: k, body: { a: 1 } });
        expect(retry.status).toBe(201);
        expect(retry.headers['idempotent-replayed']).toBe('true');
        expect(retry.json()).toEqual({ n: 1 });
        expect(leaseApp.calls('first-held', k)).toBe(1);
      } finally {
        leaseApp.openGate();
      }
    });

    it('while the key is being claimed releases it at once: nothing ran, and the retry runs', async () => {
      const k = key();
      const claimsBefore = stalled.claims;
      stalled.claimDelayMs = 150;
      const controller = new AbortController();
      const gone = request(`${leased.url}/orders`, {
        method: 'POST',
        headers: { 'idempotency-key': k, 'content-type': 'application/json' },
        body: JSON.stringify({ a: 1 }),
        signal: controller.signal,
      }).then(
        () => 'answered',
        () => 'aborted',
      );
      try {
        await sleep(50); // the claim is under way
        controller.abort();
        expect(await gone).toBe('aborted');
        await until(() => stalled.claims > claimsBefore, 'the claim reaches the store');
        stalled.claimDelayMs = 0;
        await sleep(30);
        // Well within the lease: a key still held would answer 409, a route that ran a replay.
        const retry = await send(leased.url, '/orders', { key: k, body: { a: 1 } });
        expect(retry.status).toBe(201);
        expect(retry.headers['idempotent-replayed']).toBeUndefined();
        expect(retry.json()).toMatchObject({ n: 1, key: k });
        expect(leaseApp.calls('orders', k)).toBe(1);
      } finally {
        stalled.claimDelayMs = 0;
      }
    });
  });
});
