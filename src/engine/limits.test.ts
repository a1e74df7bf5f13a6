import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../stores/memory.js';
import type { IdempotencyStore } from '../vocabulary/index.js';
import { createIdempotency } from './engine.js';
import { LimitTicket, ScopeLimiter } from './limits.js';
import type { IdempotencyEvent, IdempotencyOptions } from './types.js';

const URL_BASE = 'http://api.test';

function post(key: string, tenant = 'acme', body = '{"amount":100}') {
  return new Request(`${URL_BASE}/payments`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-tenant': tenant },
    body,
  });
}

/** An engine scoped by `x-tenant` whose handler runs until the test lets it finish, per key. */
function setup(options: Partial<IdempotencyOptions> = {}) {
  const events: IdempotencyEvent[] = [];
  const store = createMemoryStore();
  const runs: string[] = [];
  const gates = new Map<string, () => void>();
  const idem = createIdempotency({
    store,
    scope: (request) => request.header('x-tenant'),
    onEvent: (event) => events.push(event),
    ...options,
  });
  /** Runs the handler; it waits for `finish(key)` when `hold` is set. */
  const send = (key: string, tenant = 'acme', hold = false, status = 201) =>
    idem.handle(post(key, tenant), async (_request, ctx) => {
      runs.push(ctx.key);
      if (hold) await new Promise<void>((resolve) => gates.set(ctx.key, resolve));
      return Response.json({ key: ctx.key, run: runs.length }, { status });
    });
  const finish = (key: string) => {
    const gate = gates.get(key);
    expect(gate, `no run of ${key} is waiting`).toBeDefined();
    gate?.();
  };
  const started = async (count: number) => {
    for (let i = 0; i < 100 && gates.size < count; i++) await new Promise((resolve) => setTimeout(resolve, 2));
    expect(gates.size).toBe(count);
  };
  return { idem, store, events, runs, send, finish, started };
}

async function problem(response: Response) {
  expect(response.headers.get('content-type')).toBe('application/problem+json');
  return (await response.json()) as { type: string; status: number; code: string; detail: string };
}

describe('limits.inFlight', () => {
  it('answers the (N+1)th concurrent new key of a scope 429 with Retry-After, claims nothing for it, and leaves other scopes alone', async () => {
    const { send, finish, started, store, runs, events } = setup({ limits: { inFlight: 2 } });
    const first = send('a', 'acme', true);
    const second = send('b', 'acme', true);
    await started(2);
    const sizeBefore = store.size;

    const refused = await send('c', 'acme');
    expect(refused.status).toBe(429);
    expect(refused.headers.get('retry-after')).toBe('1');
    const body = await problem(refused);
    expect(body.code).toBe('IDEMPO_RATE_LIMITED');
    expect(body.type).toBe('https://idempo.dev/problems/rate-limited');
    // Nothing was claimed: no record for c, and c's handler never ran.
    expect(store.size).toBe(sizeBefore);
    expect(runs).toEqual(['a', 'b']);
    expect(events.filter((e) => e.type === 'rate_limited')).toMatchObject([
      { type: 'rate_limited', key: 'c', status: 429, reason: 'in_flight' },
    ]);

    // Another tenant has its own allowance.
    const other = await send('c', 'globex');
    expect(other.status).toBe(201);

    finish('a');
    expect((await first).status).toBe(201);
    // A place is free again: c runs once, as a first request.
    const retried = await send('c', 'acme');
    expect(retried.status).toBe(201);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
    expect(runs.filter((key) => key === 'c')).toHaveLength(2); // once for globex, once for acme
    const replayed = await send('c', 'acme');
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    finish('b');
    await second;
  });

  it('never takes over or releases a key in flight: a duplicate at the limit is refused and the original is stored', async () => {
    const { send, finish, started, runs } = setup({ limits: { inFlight: 1 } });
    const original = send('a', 'acme', true);
    await started(1);
    const duplicate = await send('a', 'acme');
    expect(duplicate.status).toBe(429);
    finish('a');
    const first = await original;
    expect(first.status).toBe(201);
    const replay = await send('a', 'acme');
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.json()).toEqual(await first.json());
    expect(runs).toEqual(['a']);
  });

  it('frees the place when a run ends however it ends: stored, released for a 5xx, thrown', async () => {
    const { idem, send } = setup({ limits: { inFlight: 1 } });
    expect((await send('a', 'acme', false, 201)).status).toBe(201);
    expect((await send('b', 'acme', false, 503)).status).toBe(503);
    const threw = await idem.handle(post('c'), () => {
      throw new Error('boom');
    });
    expect(threw.status).toBe(500);
    // Replays, mismatches and conflicts give their place back at once.
    expect((await send('a', 'acme')).headers.get('idempotent-replayed')).toBe('true');
    expect((await idem.handle(post('a', 'acme', '{"amount":5}'), () => new Response())).status).toBe(422);
    expect((await send('d', 'acme')).status).toBe(201);
  });

  it('gives the place back when the claim fails (fail-closed 503)', async () => {
    const inner = createMemoryStore();
    let failClaims = 1;
    const flaky: IdempotencyStore = {
      claim: (input) => (failClaims-- > 0 ? Promise.reject(new Error('store down')) : inner.claim(input)),
      complete: (...args) => inner.complete(...args),
      release: (...args) => inner.release(...args),
      renew: (...args) => inner.renew(...args),
      saveStep: (...args) => inner.saveStep(...args),
    };
    const { send } = setup({ store: flaky, limits: { inFlight: 1 } });
    expect((await send('a')).status).toBe(503);
    expect((await send('a')).status).toBe(201);
  });

  it('gives the place back when the request fails before its claim (a fingerprint that throws)', async () => {
    let failures = 1;
    const { send } = setup({
      limits: { inFlight: 1 },
      fingerprint: () => {
        if (failures-- > 0) throw new Error('fingerprint failed');
        return 'same';
      },
    });
    const failed = await send('a').then(
      (response) => response.status,
      () => 'rejected',
    );
    expect(failed).not.toBe(201);
    expect((await send('b')).status).toBe(201);
  });

  it('counts a duplicate waiting with concurrent: wait, and admits again once the wait is answered', async () => {
    const { send, finish, started } = setup({ limits: { inFlight: 2 }, concurrent: 'wait', waitTimeout: '5s' });
    const original = send('a', 'acme', true);
    await started(1);
    const waiter = send('a', 'acme');
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect((await send('b', 'acme')).status).toBe(429);
    finish('a');
    await original;
    expect((await waiter).headers.get('idempotent-replayed')).toBe('true');
    expect((await send('b', 'acme')).status).toBe(201);
  });

  it('limits callers without a scope by their client address through begin()', async () => {
    const idem = createIdempotency({ store: createMemoryStore(), limits: { inFlight: 1 } });
    const request = (key: string, remoteAddress: string) => ({
      method: 'POST',
      url: '/payments',
      remoteAddress,
      header: (name: string) => (name === 'idempotency-key' ? key : undefined),
      body: async () => null,
    });
    const held = await idem.begin(request('a', '10.0.0.1'));
    expect(held.action).toBe('execute');
    const refused = await idem.begin(request('b', '10.0.0.1'));
    expect(refused.action === 'respond' && refused.response.status).toBe(429);
    expect((await idem.begin(request('b', '10.0.0.2'))).action).toBe('execute');
    if (held.action === 'execute') await held.commit({ status: 201, headers: [], body: new Uint8Array() });
    expect((await idem.begin(request('c', '10.0.0.1'))).action).toBe('execute');
  });
});

describe('limits.newKeys', () => {
  it('refuses new keys past max within the window, with Retry-After; replays do not count; the window slides', async () => {
    const { send, runs, events } = setup({ limits: { newKeys: { max: 2, window: '400ms' } } });
    expect((await send('a')).status).toBe(201);
    for (let i = 0; i < 3; i++) expect((await send('a')).headers.get('idempotent-replayed')).toBe('true');
    expect((await send('b')).status).toBe(201);
    const refused = await send('c');
    expect(refused.status).toBe(429);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await problem(refused)).code).toBe('IDEMPO_RATE_LIMITED');
    expect(events.at(-1)).toMatchObject({ type: 'rate_limited', reason: 'new_keys', key: 'c' });
    // At the limit, a retry of a completed key waits too: the limit comes before the claim.
    expect((await send('a')).status).toBe(429);
    expect((await send('c', 'globex')).status).toBe(201);
    await new Promise((resolve) => setTimeout(resolve, 450));
    expect((await send('c')).status).toBe(201);
    expect(runs).toEqual(['a', 'b', 'c', 'c']);
  });

  it('refuses invalid limits at setup', () => {
    const store = createMemoryStore();
    expect(() => createIdempotency({ store, limits: {} })).toThrow(/inFlight, newKeys or both/);
    expect(() => createIdempotency({ store, limits: { inFlight: 0 } })).toThrow(/limits.inFlight/);
    expect(() => createIdempotency({ store, limits: { newKeys: { max: 2, window: 0 } } })).toThrow(
      /limits.newKeys.window/,
    );
    expect(() => createIdempotency({ store, limits: { inFlight: 1, maxScopes: -1 } })).toThrow(/limits.maxScopes/);
  });
});

describe('bounded memory under a key flood', () => {
  it('tracks at most maxScopes idle scopes, however many distinct scopes arrive', () => {
    const limiter = new ScopeLimiter({
      inFlight: 4,
      newKeys: { max: 10, windowMs: 60_000 },
      maxScopes: 1_000,
    });
    let largest = 0;
    for (let i = 0; i < 100_000; i++) {
      const ticket = limiter.admit(`scope-${i}`);
      if (!(ticket instanceof LimitTicket)) throw new Error(`scope-${i} was refused its first key`);
      ticket.finish();
      largest = Math.max(largest, limiter.size);
    }
    expect(largest).toBe(1_000);
    expect(limiter.size).toBe(1_000);
  });

  it('never forgets a scope with keys in flight, and holds no more than maxScopes besides the busy ones', () => {
    const limiter = new ScopeLimiter({ inFlight: 1, newKeys: undefined, maxScopes: 100 });
    const busy = Array.from({ length: 50 }, (_, i) => limiter.admit(`busy-${i}`) as LimitTicket);
    let largest = 0;
    for (let i = 0; i < 20_000; i++) {
      (limiter.admit(`flood-${i}`) as LimitTicket).finish();
      largest = Math.max(largest, limiter.size);
    }
    expect(largest).toBeLessThanOrEqual(150);
    // The busy scopes are still counted: a second key of one of them is refused.
    for (let i = 0; i < 50; i++) expect(limiter.admit(`busy-${i}`)).toMatchObject({ limit: 'in_flight' });
    for (const ticket of busy) ticket.finish();
    for (let i = 0; i < 1_000; i++) (limiter.admit(`later-${i}`) as LimitTicket).finish();
    expect(limiter.size).toBeLessThanOrEqual(100);
  });

  it('keeps the memory store within maxEntries while a flood of distinct scopes and keys goes through the engine', async () => {
    const store = createMemoryStore({ maxEntries: 500 });
    const idem = createIdempotency({
      store,
      scope: (request) => request.header('x-tenant'),
      limits: { inFlight: 2, newKeys: { max: 3, window: '1m' }, maxScopes: 200 },
    });
    let ran = 0;
    let refused = 0;
    let largest = 0;
    for (let i = 0; i < 5_000; i++) {
      // 1,000 tenants, each sending 5 new keys in a row: the last two of each are over newKeys.max.
      const response = await idem.handle(post(`key-${i}`, `tenant-${Math.floor(i / 5)}`), () => {
        ran++;
        return new Response('ok', { status: 201 });
      });
      if (response.status === 429) refused++;
      largest = Math.max(largest, store.size);
    }
    expect(ran).toBe(3_000);
    expect(refused).toBe(2_000);
    expect(largest).toBeLessThanOrEqual(500);
  });
});
