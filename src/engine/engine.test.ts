import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { createMemoryStore } from '../stores/memory.js';
import { createSqliteStore } from '../stores/sqlite.js';
import { type IdempotencyStore, IdempotencyUpstreamTimeoutError } from '../vocabulary/index.js';
import { createIdempotency } from './engine.js';
import { CLIENT_GONE } from './error-responses.js';
import type { IdempotencyContext, IdempotencyEvent, IdempotencyOptions, IdempotencyRequest } from './types.js';

const URL_BASE = 'http://api.test';

function post(
  path: string,
  init: { key?: string; body?: string; headers?: Record<string, string>; method?: string } = {},
) {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...init.headers };
  if (init.key !== undefined) headers['idempotency-key'] = init.key;
  return new Request(URL_BASE + path, { method: init.method ?? 'POST', headers, body: init.body ?? '{"amount":100}' });
}

function setup(options: Partial<IdempotencyOptions> = {}) {
  const events: IdempotencyEvent[] = [];
  let runs = 0;
  const idem = createIdempotency({ store: createMemoryStore(), onEvent: (e) => events.push(e), ...options });
  const handler = async (request: Request) => {
    runs++;
    const body = await request.text();
    return new Response(JSON.stringify({ run: runs, echo: body }), {
      status: 201,
      headers: {
        'content-type': 'application/json',
        'x-custom': 'kept',
        'set-cookie': 'session=1',
        'x-run': String(runs),
      },
    });
  };
  return { idem, events, handler, runs: () => runs };
}

/** An engine-level request (no adapter): `POST /pay` with `key` and no body. */
function bodilessPost(key: string): IdempotencyRequest {
  return {
    method: 'POST',
    url: '/pay',
    header: (name: string) => (name === 'idempotency-key' ? key : undefined),
    body: async () => null,
  };
}

async function problem(response: Response) {
  expect(response.headers.get('content-type')).toBe('application/problem+json');
  return (await response.json()) as { type: string; status: number; code: string; title: string; detail: string };
}

describe('protocol rows through handle()', () => {
  it('passes methods not in `methods` through untouched', async () => {
    const { idem, handler, runs } = setup();
    const res = await idem.handle(
      new Request(`${URL_BASE}/x`, { method: 'PUT', headers: { 'idempotency-key': 'k' }, body: 'a' }),
      handler,
    );
    expect(res.status).toBe(201);
    await idem.handle(
      new Request(`${URL_BASE}/x`, { method: 'PUT', headers: { 'idempotency-key': 'k' }, body: 'a' }),
      handler,
    );
    expect(runs()).toBe(2);
  });

  it('passes requests without a key through when not required', async () => {
    const { idem, handler, runs } = setup();
    await idem.handle(post('/pay'), handler);
    const res = await idem.handle(post('/pay'), handler);
    expect(runs()).toBe(2);
    expect(res.headers.get('idempotent-replayed')).toBeNull();
  });

  it('answers 400 problem+json without a key when required', async () => {
    const { idem, handler, runs, events } = setup({ required: true });
    const res = await idem.handle(post('/pay'), handler);
    expect(res.status).toBe(400);
    const body = await problem(res);
    expect(body.code).toBe('IDEMPO_KEY_MISSING');
    expect(body.type).toBe('https://idempo.dev/problems/key-missing');
    expect(runs()).toBe(0);
    expect(events.map((e) => e.type)).toEqual(['invalid_key']);
  });

  it('lets `required` decide per request', async () => {
    const { idem, handler } = setup({ required: (r) => r.url.startsWith('/pay') });
    expect((await idem.handle(post('/pay'), handler)).status).toBe(400);
    expect((await idem.handle(post('/other'), handler)).status).toBe(201);
  });

  it.each([
    ['empty', ''],
    ['too long', 'k'.repeat(256)],
    ['a space', 'a b'],
    ['non-ASCII', 'clé'],
    ['an unterminated string', '"abc'],
    ['an empty string', '""'],
    ['two keys', 'a, b'],
  ])('answers 400 for a key that is %s, running nothing', async (_label, key) => {
    const { idem, handler, runs } = setup();
    const res = await idem.handle(post('/pay', { key }), handler);
    expect(res.status).toBe(400);
    expect((await problem(res)).code).toBe('IDEMPO_KEY_INVALID');
    expect(runs()).toBe(0);
  });

  it('accepts a Structured Field string key as its content', async () => {
    const { idem, handler, runs } = setup();
    await idem.handle(post('/pay', { key: '"abc"' }), handler);
    const res = await idem.handle(post('/pay', { key: 'abc' }), handler);
    expect(res.headers.get('idempotent-replayed')).toBe('true');
    expect(runs()).toBe(1);
  });

  it('honours maxKeyLength', async () => {
    const { idem, handler } = setup({ maxKeyLength: 8 });
    expect((await idem.handle(post('/pay', { key: '12345678' }), handler)).status).toBe(201);
    expect((await idem.handle(post('/pay', { key: '123456789' }), handler)).status).toBe(400);
  });

  it('runs the first request and replays it byte for byte with Idempotent-Replayed', async () => {
    const { idem, handler, runs, events } = setup();
    const first = await idem.handle(post('/pay', { key: 'k1' }), handler);
    const firstBody = await first.text();
    expect(first.status).toBe(201);
    expect(first.headers.get('set-cookie')).toBe('session=1');
    const replay = await idem.handle(post('/pay', { key: 'k1' }), handler);
    expect(replay.status).toBe(201);
    expect(await replay.text()).toBe(firstBody);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.headers.get('x-custom')).toBe('kept');
    expect(replay.headers.get('content-type')).toBe('application/json');
    expect(replay.headers.get('set-cookie')).toBeNull();
    expect(replay.headers.get('date')).toMatch(/GMT$/);
    expect(runs()).toBe(1);
    expect(events.map((e) => e.type)).toEqual(['executed', 'replayed']);
  });

  it('gives a web response a fresh Date when it has none, and keeps the one it has', async () => {
    const unkeyedRequired = createIdempotency({ store: createMemoryStore(), required: true });
    const refused = await unkeyedRequired.handle(post('/pay', {}), async () => new Response('never'));
    expect(refused.status).toBe(400);
    expect(refused.headers.get('date')).toMatch(/GMT$/);
    const dated = async () => new Response('x', { headers: { date: 'Tue, 01 Dec 2026 10:00:00 GMT' } });
    const keeping = createIdempotency({ store: createMemoryStore(), replayHeaders: { exclude: [] } });
    await keeping.handle(post('/pay', { key: 'dated' }), dated);
    const replay = await keeping.handle(post('/pay', { key: 'dated' }), dated);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.headers.get('date')).toBe('Tue, 01 Dec 2026 10:00:00 GMT');
  });

  it('does not let a handler forge the replay marker', async () => {
    const { idem } = setup();
    const forging = async () => new Response('x', { headers: { 'idempotent-replayed': 'true' } });
    await idem.handle(post('/pay', { key: 'k' }), forging);
    const replay = await idem.handle(post('/pay', { key: 'k' }), forging);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect([...replay.headers.entries()].filter(([n]) => n === 'idempotent-replayed')).toHaveLength(1);
  });

  it('answers 409 with Retry-After to a duplicate while the first still runs', async () => {
    const { idem, events } = setup();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const slow = async () => {
      await gate;
      return new Response('done', { status: 201 });
    };
    const first = idem.handle(post('/pay', { key: 'k' }), slow);
    await new Promise((r) => setTimeout(r, 20));
    const dup = await idem.handle(post('/pay', { key: 'k' }), slow);
    expect(dup.status).toBe(409);
    expect(dup.headers.get('retry-after')).toBe('1');
    expect((await problem(dup)).code).toBe('IDEMPO_CONFLICT');
    release();
    expect((await first).status).toBe(201);
    expect(events.map((e) => e.type)).toContain('conflict');
  });

  it("with concurrent: 'wait', a duplicate waits and replays the original's response", async () => {
    const { idem } = setup({ concurrent: 'wait', waitTimeout: '5s' });
    let runs = 0;
    const slow = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 100));
      return new Response('original', { status: 201 });
    };
    const [a, b] = await Promise.all([
      idem.handle(post('/pay', { key: 'k' }), slow),
      (async () => {
        await new Promise((r) => setTimeout(r, 10));
        return idem.handle(post('/pay', { key: 'k' }), slow);
      })(),
    ]);
    expect(runs).toBe(1);
    expect(await a.text()).toBe('original');
    expect(await b.text()).toBe('original');
    expect(b.headers.get('idempotent-replayed')).toBe('true');
  });

  it("with concurrent: 'wait', a failing change notification falls back to polling", async () => {
    const memory = createMemoryStore();
    const store: IdempotencyStore = {
      ...memory,
      claim: memory.claim,
      waitForChange: async () => {
        throw new Error('pub/sub down');
      },
    };
    const idem = createIdempotency({ store, concurrent: 'wait', waitTimeout: '5s' });
    let runs = 0;
    const slow = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 80));
      return new Response('original', { status: 201 });
    };
    const first = idem.handle(post('/pay', { key: 'k' }), slow);
    await new Promise((r) => setTimeout(r, 10));
    const dup = await idem.handle(post('/pay', { key: 'k' }), slow);
    expect(await dup.text()).toBe('original');
    expect(dup.headers.get('idempotent-replayed')).toBe('true');
    expect((await first).status).toBe(201);
    expect(runs).toBe(1);
  });

  it("with concurrent: 'wait', a duplicate gets 409 once waitTimeout passes", async () => {
    const { idem } = setup({ concurrent: 'wait', waitTimeout: 100 });
    const slow = async () => {
      await new Promise((r) => setTimeout(r, 400));
      return new Response('late', { status: 201 });
    };
    const first = idem.handle(post('/pay', { key: 'k' }), slow);
    await new Promise((r) => setTimeout(r, 10));
    const started = Date.now();
    const dup = await idem.handle(post('/pay', { key: 'k' }), slow);
    expect(dup.status).toBe(409);
    expect(Date.now() - started).toBeGreaterThanOrEqual(90);
    await first;
  });

  it('answers 422 to the same key with a different body, running and overwriting nothing', async () => {
    const { idem, handler, runs, events } = setup();
    await idem.handle(post('/pay', { key: 'k', body: '{"amount":100}' }), handler);
    const res = await idem.handle(post('/pay', { key: 'k', body: '{"amount":999}' }), handler);
    expect(res.status).toBe(422);
    expect((await problem(res)).code).toBe('IDEMPO_MISMATCH');
    const replay = await idem.handle(post('/pay', { key: 'k', body: '{"amount":100}' }), handler);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(runs()).toBe(1);
    expect(events.map((e) => e.type)).toEqual(['executed', 'mismatch', 'replayed']);
  });

  it.each([
    ['path', post('/other', { key: 'k' })],
    ['query', post('/pay?x=1', { key: 'k' })],
    ['method', post('/pay', { key: 'k', method: 'PATCH' })],
    ['credentials', post('/pay', { key: 'k', headers: { authorization: 'Bearer someone-else' } })],
  ])('treats a different %s as a different request (422)', async (_label, second) => {
    const { idem, handler } = setup();
    await idem.handle(post('/pay', { key: 'k', headers: { authorization: 'Bearer me' } }), handler);
    expect((await idem.handle(second, handler)).status).toBe(422);
  });

  it('gives Stripe’s 400 for a mismatch with mismatchStatus: 400', async () => {
    const { idem, handler } = setup({ mismatchStatus: 400 });
    await idem.handle(post('/pay', { key: 'k', body: '{"a":1}' }), handler);
    const res = await idem.handle(post('/pay', { key: 'k', body: '{"a":2}' }), handler);
    expect(res.status).toBe(400);
    expect((await problem(res)).code).toBe('IDEMPO_MISMATCH');
  });

  it('ignores JSON key order and query parameter order in the fingerprint', async () => {
    const { idem, handler, runs } = setup();
    await idem.handle(post('/pay?a=1&b=2', { key: 'k', body: '{"a":1,"b":{"c":2,"d":3}}' }), handler);
    const res = await idem.handle(post('/pay?b=2&a=1', { key: 'k', body: '{ "b": {"d":3,"c":2}, "a": 1 }' }), handler);
    expect(res.headers.get('idempotent-replayed')).toBe('true');
    expect(runs()).toBe(1);
  });

  it('fingerprints broken JSON as raw bytes and lets the handler answer it', async () => {
    const { idem, runs } = setup();
    const handler = async (request: Request) => {
      try {
        JSON.parse(await request.text());
        return new Response('ok');
      } catch {
        return new Response('bad json', { status: 400 });
      }
    };
    const first = await idem.handle(post('/pay', { key: 'k', body: '{"amount":' }), handler);
    expect(first.status).toBe(400);
    const replay = await idem.handle(post('/pay', { key: 'k', body: '{"amount":' }), handler);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect((await idem.handle(post('/pay', { key: 'k', body: '{"amount": ' }), handler)).status).toBe(422);
    expect(runs()).toBe(0);
  });

  it('releases the key when the handler throws, answers 500, and lets the retry run', async () => {
    const { idem, events } = setup();
    let calls = 0;
    const flaky = async () => {
      calls++;
      if (calls === 1) throw new Error('database down');
      return new Response('ok', { status: 201 });
    };
    const failed = await idem.handle(post('/pay', { key: 'k' }), flaky);
    expect(failed.status).toBe(500);
    expect((await problem(failed)).code).toBe('IDEMPO_HANDLER_FAILED');
    const retry = await idem.handle(post('/pay', { key: 'k' }), flaky);
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(calls).toBe(2);
    expect(events.find((e) => e.type === 'released')?.reason).toBe('threw');
  });

  it("names the release of a client that hung up before the handler started 'client_gone', not 'threw'", async () => {
    const events: IdempotencyEvent[] = [];
    const idem = createIdempotency({ store: createMemoryStore(), onEvent: (e) => events.push(e) });
    const request = bodilessPost('k');
    const decision = await idem.begin(request);
    if (decision.action !== 'execute') throw new Error(decision.action);
    await decision.abort(CLIENT_GONE);
    expect(events.filter((e) => e.type === 'released').map((e) => e.reason)).toEqual(['client_gone']);
    // Released: the retry runs.
    expect((await idem.begin(request)).action).toBe('execute');
  });

  it('releases the key on a releaseOn status and keeps other statuses', async () => {
    const { idem } = setup();
    let status = 503;
    const handler = async () => new Response('x', { status });
    expect((await idem.handle(post('/pay', { key: 'k' }), handler)).status).toBe(503);
    status = 404;
    expect((await idem.handle(post('/pay', { key: 'k' }), handler)).status).toBe(404);
    status = 200;
    const replay = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(replay.status).toBe(404);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
  });

  it('keeps 500s with releaseOn: [] (Stripe’s rule)', async () => {
    const { idem } = setup({ releaseOn: [] });
    const handler = async () => new Response('boom', { status: 500 });
    await idem.handle(post('/pay', { key: 'k' }), handler);
    const replay = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(replay.status).toBe(500);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
  });

  it('answers 503 with Retry-After and runs nothing when the store is unreachable (fail-closed)', async () => {
    const broken = brokenStore();
    const events: IdempotencyEvent[] = [];
    const idem = createIdempotency({ store: broken, onEvent: (e) => events.push(e) });
    let runs = 0;
    const res = await idem.handle(post('/pay', { key: 'k' }), async () => {
      runs++;
      return new Response('x');
    });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await problem(res)).code).toBe('IDEMPO_STORE_UNAVAILABLE');
    expect(runs).toBe(0);
    expect(events[0]).toMatchObject({ type: 'store_error', action: 'fail-closed', reason: 'claim' });
  });

  it('holds the response while a failed completion is retried, and sends it once it is stored', async () => {
    const memory = createMemoryStore();
    const events: IdempotencyEvent[] = [];
    let failures = 2;
    const store: IdempotencyStore = {
      ...memory,
      claim: memory.claim,
      complete: async (...args) => {
        if (failures-- > 0) throw new Error('connection lost mid-request');
        return memory.complete(...args);
      },
    };
    const idem = createIdempotency({ store, lease: 2_000, onEvent: (e) => events.push(e) });
    let runs = 0;
    const handler = async () => {
      runs++;
      return new Response('charged', { status: 201 });
    };
    const res = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(res.status).toBe(201);
    expect(await res.text()).toBe('charged');
    const again = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await again.text()).toBe('charged');
    expect(runs).toBe(1);
    expect(events.map((e) => [e.type, e.reason, e.action])).toEqual([
      ['store_error', 'complete', 'retrying'],
      ['executed', undefined, undefined],
      ['replayed', undefined, undefined],
    ]);
  });

  it('never sends a success it could not store: 503 with Retry-After, and the key kept until its lease passes', async () => {
    const memory = createMemoryStore();
    const events: IdempotencyEvent[] = [];
    const store: IdempotencyStore = {
      ...memory,
      claim: memory.claim,
      complete: async () => {
        throw new Error('connection lost mid-request');
      },
    };
    const idem = createIdempotency({
      store,
      lease: 400,
      completeTimeout: 50,
      onEvent: (e) => events.push(e),
    });
    let runs = 0;
    const handler = async () => {
      runs++;
      return new Response('charged', { status: 201 });
    };
    const res = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(await res.json()).toMatchObject({ code: 'IDEMPO_RESULT_NOT_STORED', status: 503 });
    // The work ran and its result is unknown to the store: a retry meanwhile is held off, not run.
    const during = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(during.status).toBe(409);
    expect(runs).toBe(1);
    // Renewal stopped when the client was answered: once the lease passes, a retry may take the key over.
    await new Promise((r) => setTimeout(r, 500));
    await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(runs).toBe(2);
    expect(events.some((e) => e.type === 'recovered')).toBe(true);
    // The first run's fenced completion kept trying, for two leases after its last renewal, then gave up.
    await new Promise((r) => setTimeout(r, 500));
    expect(events.filter((e) => e.type === 'store_error').map((e) => e.action)).toContain('result_lost');
  });

  it('runs the handler unprotected and reports it when fail-open', async () => {
    const events: IdempotencyEvent[] = [];
    const idem = createIdempotency({ store: brokenStore(), onStoreError: 'fail-open', onEvent: (e) => events.push(e) });
    const res = await idem.handle(post('/pay', { key: 'k', body: '{"a":1}' }), async (request, ctx) => {
      expect(ctx.token).toBe(0);
      return new Response(await request.text());
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"a":1}');
    expect(events[0]).toMatchObject({ type: 'store_error', action: 'fail-open' });
  });

  it('answers 413 to a keyed body over maxBodyBytes, running nothing', async () => {
    const { idem, handler, runs } = setup({ maxBodyBytes: 10 });
    const res = await idem.handle(post('/pay', { key: 'k', body: 'x'.repeat(11) }), handler);
    expect(res.status).toBe(413);
    expect((await problem(res)).code).toBe('IDEMPO_BODY_TOO_LARGE');
    expect(runs()).toBe(0);
    expect((await idem.handle(post('/pay', { key: 'k', body: 'x'.repeat(10) }), handler)).status).toBe(201);
  });

  it('answers 413 to a streamed body that grows past maxBodyBytes without a Content-Length', async () => {
    const { idem, handler } = setup({ maxBodyBytes: 1_000 });
    const stream = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 5; i++) controller.enqueue(new Uint8Array(400));
        controller.close();
      },
    });
    const request = new Request(`${URL_BASE}/pay`, {
      method: 'POST',
      headers: { 'idempotency-key': 'k' },
      body: stream,
      duplex: 'half',
    } as RequestInit);
    expect((await idem.handle(request, handler)).status).toBe(413);
  });

  it('sends a response over maxResponseBytes whole and keeps its key completed: a retry gets 410 naming the status', async () => {
    const { idem, events } = setup({ maxResponseBytes: 100 });
    let runs = 0;
    const big = async () => {
      runs++;
      return new Response('y'.repeat(101), { status: 201, headers: { location: '/payments/1' } });
    };
    const first = await idem.handle(post('/pay', { key: 'k' }), big);
    expect(first.status).toBe(201);
    expect((await first.text()).length).toBe(101);
    const again = await idem.handle(post('/pay', { key: 'k' }), big);
    expect(again.status).toBe(410);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(again.headers.get('content-type')).toBe('application/problem+json');
    expect(await again.json()).toMatchObject({
      code: 'IDEMPO_RESPONSE_NOT_KEPT',
      status: 410,
      originalStatus: 201,
      type: 'https://idempo.dev/problems/response-not-kept',
    });
    expect(runs).toBe(1);
    expect(events.map((e) => e.type)).toEqual(['executed', 'replayed']);
  });

  it('keeps keys of different scopes apart', async () => {
    const { idem, handler, runs } = setup({ scope: (r) => r.header('x-tenant') });
    await idem.handle(post('/pay', { key: 'k', headers: { 'x-tenant': 'a' } }), handler);
    const other = await idem.handle(post('/pay', { key: 'k', headers: { 'x-tenant': 'b' } }), handler);
    expect(other.headers.get('idempotent-replayed')).toBeNull();
    expect(runs()).toBe(2);
  });

  it('uses a custom fingerprint', async () => {
    const { idem, handler, runs } = setup({ fingerprint: (r) => r.url });
    await idem.handle(post('/pay', { key: 'k', body: '{"a":1}' }), handler);
    const res = await idem.handle(post('/pay', { key: 'k', body: '{"a":2}' }), handler);
    expect(res.headers.get('idempotent-replayed')).toBe('true');
    expect(runs()).toBe(1);
  });

  it('replays a custom fingerprint with a lone surrogate on a store that keeps text as UTF-8', async () => {
    // SQLite reads the fingerprint back with U+FFFD in place of the surrogate; the engine hands
    // every store the well-formed string, so the retry still matches.
    const dir = mkdtempSync(join(tmpdir(), 'idempo-fp-'));
    const store = createSqliteStore({ path: join(dir, 'fp.db') });
    try {
      const { idem, handler, runs } = setup({ store, fingerprint: (r) => `${r.url}\ud800` });
      expect((await idem.handle(post('/pay', { key: 'k' }), handler)).status).toBe(201);
      const retry = await idem.handle(post('/pay', { key: 'k' }), handler);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect((await idem.handle(post('/other', { key: 'k' }), handler)).status).toBe(422);
      expect(runs()).toBe(1);
    } finally {
      await store.close?.();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('awaits a custom fingerprint that returns a promise, made well-formed too', async () => {
    const { idem, handler, runs } = setup({ fingerprint: async (r) => `${r.url}\udc00` });
    await idem.handle(post('/pay', { key: 'k' }), handler);
    expect((await idem.handle(post('/pay', { key: 'k' }), handler)).headers.get('idempotent-replayed')).toBe('true');
    expect(runs()).toBe(1);
  });

  it("formats idempo's errors Stripe's way with errorFormat: 'stripe'", async () => {
    const { idem, handler } = setup({ errorFormat: 'stripe', required: true });
    const res = await idem.handle(post('/pay'), handler);
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({
      error: { type: 'invalid_request_error', code: 'idempo_key_missing', message: expect.any(String) },
    });
  });

  it('formats errors with a custom function', async () => {
    const { idem, handler } = setup({
      required: true,
      errorFormat: (error) => ({ status: error.status, headers: [['x-err', error.code]], body: new Uint8Array() }),
    });
    const res = await idem.handle(post('/pay'), handler);
    expect(res.headers.get('x-err')).toBe('IDEMPO_KEY_MISSING');
  });

  it("takes a synchronous store's claims together at the check phase of the turn, not inline", async () => {
    const memory = createMemoryStore();
    const sync = memory.sync as NonNullable<IdempotencyStore['sync']>;
    const events: string[] = [];
    const claimSync = sync.claim;
    Object.assign(sync, {
      claim: (input: Parameters<typeof claimSync>[0]) => {
        events.push('claim');
        return claimSync(input);
      },
    });
    const idem = createIdempotency({ store: memory });
    // An immediate queued before the requests runs before a batch of claims they queue, and after
    // any claim made inline in a microtask.
    setImmediate(() => events.push('check phase'));
    const responses = await Promise.all([
      idem.handle(post('/pay', { key: 'turn-1' }), async () => new Response('one')),
      idem.handle(post('/pay', { key: 'turn-2' }), async () => new Response('two')),
    ]);
    expect(responses.map((r) => r.status)).toEqual([200, 200]);
    expect(events).toEqual(['check phase', 'claim', 'claim']);
  });

  it('answers on a synchronous store while a test fakes the timers, without advancing them', async () => {
    const idem = createIdempotency({ store: createMemoryStore() });
    vi.useFakeTimers();
    try {
      const first = await idem.handle(post('/pay', { key: 'faked' }), async () => new Response('once'));
      const again = await idem.handle(post('/pay', { key: 'faked' }), async () => new Response('twice'));
      expect(await first.text()).toBe('once');
      expect(await again.text()).toBe('once');
    } finally {
      vi.useRealTimers();
    }
  });

  it('never bypasses a wrapper of a synchronous store: its claim and complete run', async () => {
    const memory = createMemoryStore();
    const calls: string[] = [];
    // A wrapper that inherits everything, the synchronous operations included, and replaces two methods.
    const wrapper = Object.create(memory) as IdempotencyStore;
    Object.assign(wrapper, {
      claim: (input: Parameters<IdempotencyStore['claim']>[0]) => {
        calls.push('claim');
        return memory.claim(input);
      },
      complete: (...args: Parameters<IdempotencyStore['complete']>) => {
        calls.push('complete');
        return memory.complete(...args);
      },
    });
    expect(wrapper.sync).toBe(memory.sync);
    const idem = createIdempotency({ store: wrapper });
    expect((await idem.handle(post('/pay', { key: 'wrapped' }), async () => new Response('x'))).status).toBe(200);
    expect(calls).toEqual(['claim', 'complete']);
  });

  it('keeps the key bound to its scope-free hash: the store never sees the raw key', async () => {
    const seen: string[] = [];
    const memory = createMemoryStore();
    const spy: IdempotencyStore = {
      ...memory,
      claim: (input) => {
        seen.push(input.key);
        return memory.claim(input);
      },
    };
    const idem = createIdempotency({ store: spy });
    await idem.handle(post('/pay', { key: 'secret-key' }), async () => new Response('x'));
    expect(seen[0]).not.toContain('secret-key');
    expect(seen[0]).toMatch(/^[A-Za-z0-9_-]{43}$/);
  });
});

describe('execution context', () => {
  it('gives the handler its key, token and recovered flag', async () => {
    const { idem } = setup();
    let seen: IdempotencyContext | undefined;
    await idem.handle(post('/pay', { key: 'ctx-key' }), async (_req, ctx) => {
      seen = ctx;
      return new Response('x');
    });
    expect(seen?.key).toBe('ctx-key');
    expect(seen?.token).toBeGreaterThan(0);
    expect(seen?.recovered).toBe(false);
  });

  it('runs a step once across a released retry and returns its stored result', async () => {
    const { idem } = setup();
    let charges = 0;
    let attempt = 0;
    const handler = async (_req: Request, ctx: IdempotencyContext) => {
      attempt++;
      const charge = await ctx.step('charge', async () => ({ id: `ch_${++charges}` }));
      if (attempt === 1) throw new Error('crash after charging');
      return Response.json(charge, { status: 201 });
    };
    expect((await idem.handle(post('/pay', { key: 'k' }), handler)).status).toBe(500);
    const retry = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(await retry.json()).toEqual({ id: 'ch_1' });
    expect(charges).toBe(1);
  });

  it('renews the lease while a long handler runs, so a duplicate cannot take it over', async () => {
    const { idem } = setup({ lease: 150, concurrent: 'reject' });
    let runs = 0;
    const long = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 500));
      return new Response('long', { status: 201 });
    };
    const first = idem.handle(post('/pay', { key: 'k' }), long);
    await new Promise((r) => setTimeout(r, 350));
    expect((await idem.handle(post('/pay', { key: 'k' }), long)).status).toBe(409);
    expect((await first).status).toBe(201);
    expect(runs).toBe(1);
  });
});

describe('a lost lease', () => {
  it('answers the stalled owner’s caller 409 lease-lost, keeps the new owner’s response and replays it', async () => {
    const memory = createMemoryStore();
    // Renewals that never reach the store: the lease runs out while the first handler still works.
    const stalled: IdempotencyStore = { ...memory, claim: memory.claim, renew: async () => 'ok' };
    const events: IdempotencyEvent[] = [];
    const idem = createIdempotency({ store: stalled, lease: 100, onEvent: (e) => events.push(e) });
    let signal: AbortSignal | undefined;
    const first = idem.handle(post('/pay', { key: 'k' }), async (_req, ctx) => {
      signal = ctx.signal;
      await new Promise((r) => setTimeout(r, 250));
      return new Response('from-first', { status: 201 });
    });
    await new Promise((r) => setTimeout(r, 150));
    const second = await idem.handle(post('/pay', { key: 'k' }), async (_req, ctx) => {
      expect(ctx.recovered).toBe(true);
      return new Response('from-second', { status: 201 });
    });
    expect(await second.text()).toBe('from-second');
    const late = await first;
    expect(late.status).toBe(409);
    expect(late.headers.get('retry-after')).toBe('1');
    expect((await problem(late)).code).toBe('IDEMPO_LEASE_LOST');
    expect(signal?.aborted).toBe(true);
    const replay = await idem.handle(post('/pay', { key: 'k' }), async () => new Response('must not run'));
    expect(await replay.text()).toBe('from-second');
    expect(events.map((e) => e.type)).toEqual(['recovered', 'executed', 'lease_lost', 'replayed']);
  });

  it('refuses a step whose result arrives after the lease was lost', async () => {
    const memory = createMemoryStore();
    const stalled: IdempotencyStore = { ...memory, claim: memory.claim, renew: async () => 'ok' };
    const idem = createIdempotency({ store: stalled, lease: 100 });
    const first = idem.handle(post('/pay', { key: 'k' }), async (_req, ctx) => {
      await ctx.step('slow', async () => {
        await new Promise((r) => setTimeout(r, 250));
        return 1;
      });
      return new Response('unreachable');
    });
    await new Promise((r) => setTimeout(r, 150));
    await idem.handle(post('/pay', { key: 'k' }), async () => new Response('second', { status: 201 }));
    const late = await first;
    expect(late.status).toBe(409);
    expect((await late.json()).code).toBe('IDEMPO_LEASE_LOST');
  });
});

describe('unknown outcomes keep the key', () => {
  it('keeps the key of a handler that throws an outcomeUnknown error until the lease passes, then recovers it', async () => {
    const { idem, events } = setup({ lease: 200 });
    let runs = 0;
    const handler = async (_request: Request, ctx: IdempotencyContext) => {
      runs++;
      if (runs === 1) throw new IdempotencyUpstreamTimeoutError('the upstream has the request and is slow');
      return new Response(`recovered ${ctx.recovered}`, { status: 201 });
    };
    const first = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(first.status).toBe(504);
    expect((await idem.handle(post('/pay', { key: 'k' }), handler)).status).toBe(409);
    expect(runs).toBe(1);
    await new Promise((r) => setTimeout(r, 250));
    const later = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect([later.status, await later.text()]).toEqual([201, 'recovered true']);
    expect(events.find((e) => e.type === 'outcome_unknown')?.reason).toBe('IDEMPO_UPSTREAM_TIMEOUT');
    expect(events.some((e) => e.type === 'released')).toBe(false);
  });

  it('hands a taken-over key back unreleased when its client leaves before the handler starts, so the next claim still recovers it', async () => {
    const { idem, events } = setup({ lease: 200 });
    const request = bodilessPost('k');
    // The first owner's run ends with its outcome unknown, as after a crash mid-run.
    const first = await idem.begin(request);
    if (first.action !== 'execute') throw new Error(first.action);
    await first.abort(new IdempotencyUpstreamTimeoutError('the upstream has the request'));
    await new Promise((r) => setTimeout(r, 250));
    // A retry takes the key over, and its client hangs up before the handler starts.
    const takeover = await idem.begin(request);
    if (takeover.action !== 'execute') throw new Error(takeover.action);
    expect(takeover.context.recovered).toBe(true);
    await takeover.abort(CLIENT_GONE);
    // The next retry, at once (no second lease to wait out), runs knowing the earlier run may have happened.
    const next = await idem.begin(request);
    if (next.action !== 'execute') throw new Error(next.action);
    expect(next.context.recovered).toBe(true);
    expect(events.some((e) => e.type === 'released')).toBe(false);
    expect(events.filter((e) => e.type === 'outcome_unknown').map((e) => e.reason)).toEqual([
      'IDEMPO_UPSTREAM_TIMEOUT',
      'client_gone',
    ]);
  });

  it('retries a step whose save the store failed, so the step does not run again', async () => {
    const memory = createMemoryStore();
    let failures = 2;
    const store: IdempotencyStore = {
      ...memory,
      saveStep: async (...args) => {
        if (failures-- > 0) throw new Error('connection reset');
        return memory.saveStep(...args);
      },
    };
    const idem = createIdempotency({ store, releaseOn: ['5xx'] });
    let charges = 0;
    const handler = async (_request: Request, ctx: IdempotencyContext) => {
      await ctx.step('charge', () => ++charges);
      return new Response('{}', { status: 500 });
    };
    // The 500 releases the key; the step's saved result keeps the retry from charging again.
    await idem.handle(post('/pay', { key: 'k' }), handler);
    await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(charges).toBe(1);
  });

  it('keeps the key, not releases it, when a step ran and its result could not be stored', async () => {
    const memory = createMemoryStore();
    const store: IdempotencyStore = {
      ...memory,
      saveStep: async () => {
        throw new Error('connection reset');
      },
    };
    const events: IdempotencyEvent[] = [];
    const idem = createIdempotency({ store, lease: 1_000, completeTimeout: 100, onEvent: (e) => events.push(e) });
    let charges = 0;
    const handler = async (_request: Request, ctx: IdempotencyContext) => {
      await ctx.step('charge', () => ++charges);
      return new Response('charged', { status: 201 });
    };
    const first = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(first.status).toBe(503);
    expect(await first.json()).toMatchObject({ code: 'IDEMPO_RESULT_NOT_STORED' });
    // Released, a retry would charge again at once; kept, it waits for the lease.
    expect((await idem.handle(post('/pay', { key: 'k' }), handler)).status).toBe(409);
    expect(charges).toBe(1);
    expect(events.find((e) => e.type === 'outcome_unknown')?.reason).toBe('step_not_stored');
    expect(events.some((e) => e.type === 'released')).toBe(false);
  });

  it('goes on saving a step after answering 503, so a retry after the lease does not run it again', async () => {
    // A failover: the store refuses writes for longer than completeTimeout, then serves again
    // before the lease has run out. The retry that then recovers the key finds the step.
    const memory = createMemoryStore();
    let backAt = Number.POSITIVE_INFINITY;
    const store: IdempotencyStore = {
      ...memory,
      saveStep: async (...args) => {
        if (Date.now() < backAt) throw new Error("READONLY You can't write against a read only replica.");
        return memory.saveStep(...args);
      },
    };
    const events: IdempotencyEvent[] = [];
    const idem = createIdempotency({ store, lease: 400, completeTimeout: 100, onEvent: (e) => events.push(e) });
    let charges = 0;
    const handler = async (_request: Request, ctx: IdempotencyContext) => {
      const charge = await ctx.step('charge', () => {
        if (backAt === Number.POSITIVE_INFINITY) backAt = Date.now() + 250;
        return ++charges;
      });
      return new Response(`charge ${charge}`, { status: 201 });
    };
    const first = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect(first.status).toBe(503);
    await new Promise((r) => setTimeout(r, 600));
    const retry = await idem.handle(post('/pay', { key: 'k' }), handler);
    expect([retry.status, await retry.text()]).toEqual([201, 'charge 1']);
    expect(charges).toBe(1);
    expect(events.some((e) => e.type === 'recovered')).toBe(true);
    expect(events.some((e) => e.action === 'result_lost')).toBe(false);
  });

  it('reports a step result lost once the store stayed down two leases after the last renewal', async () => {
    const memory = createMemoryStore();
    const store: IdempotencyStore = {
      ...memory,
      saveStep: async () => {
        throw new Error('connection reset');
      },
    };
    const events: IdempotencyEvent[] = [];
    const idem = createIdempotency({ store, lease: 150, completeTimeout: 50, onEvent: (e) => events.push(e) });
    const handler = async (_request: Request, ctx: IdempotencyContext) => {
      await ctx.step('charge', () => 1);
      return new Response('charged', { status: 201 });
    };
    expect((await idem.handle(post('/pay', { key: 'k' }), handler)).status).toBe(503);
    expect(events.some((e) => e.action === 'result_lost')).toBe(false);
    await new Promise((r) => setTimeout(r, 450));
    expect(events.filter((e) => e.action === 'result_lost').map((e) => e.reason)).toEqual(['step']);
  });
});

describe('races', () => {
  it('runs 200 concurrent requests with one new key exactly once (reject)', async () => {
    const { idem } = setup();
    let runs = 0;
    const handler = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 20));
      return new Response('once', { status: 201 });
    };
    const responses = await Promise.all(
      Array.from({ length: 200 }, () => idem.handle(post('/pay', { key: 'race' }), handler)),
    );
    expect(runs).toBe(1);
    expect(responses.filter((r) => r.status === 201)).toHaveLength(1);
    expect(responses.filter((r) => r.status === 409)).toHaveLength(199);
  });

  it('runs 200 concurrent requests with one new key exactly once and gives everyone the same 2xx body (wait)', async () => {
    const { idem } = setup({ concurrent: 'wait', waitTimeout: '10s' });
    let runs = 0;
    const handler = async () => {
      runs++;
      await new Promise((r) => setTimeout(r, 50));
      return Response.json({ id: `pay_${runs}` }, { status: 201 });
    };
    const responses = await Promise.all(
      Array.from({ length: 200 }, () => idem.handle(post('/pay', { key: 'race' }), handler)),
    );
    expect(runs).toBe(1);
    const bodies = await Promise.all(responses.map((r) => r.text()));
    expect(new Set(responses.map((r) => r.status))).toEqual(new Set([201]));
    expect(new Set(bodies)).toEqual(new Set(['{"id":"pay_1"}']));
  });
});

describe('configuration', () => {
  it.each([
    [{ lease: 'soon' }, /lease/],
    [{ ttl: -1 }, /ttl/],
    [{ lease: '2h', ttl: '1h' }, /ttl/],
    [{ concurrent: 'queue' }, /concurrent/],
    [{ releaseOn: ['9xx'] }, /releaseOn/],
    [{ maxKeyLength: 0 }, /maxKeyLength/],
    [{ errorFormat: 'xml' }, /errorFormat/],
  ])('rejects %j with a coded error', (bad, message) => {
    expect(() => createIdempotency({ store: createMemoryStore(), ...(bad as object) })).toThrow(message);
    expect(() => createIdempotency({ store: createMemoryStore(), ...(bad as object) })).toThrow(
      expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID' }),
    );
  });

  it('rejects a store that does not implement the contract', () => {
    expect(() => createIdempotency({ store: {} as IdempotencyStore })).toThrow(/IdempotencyStore contract/);
  });
});

function brokenStore(): IdempotencyStore {
  const fail = async () => {
    throw new Error('ECONNREFUSED');
  };
  return { claim: fail, complete: fail, release: fail, renew: fail, saveStep: fail };
}
