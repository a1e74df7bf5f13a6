import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import type { IdempotencyStore } from '../vocabulary/index.js';
import { storeContractCases } from './contract.js';
import { createMemoryStore, type MemoryStore } from './memory.js';

const store = createMemoryStore();
afterAll(() => store.close());

describe('memory store: shared contract', () => {
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => store }));
});

describe('memory store: its synchronous claim and complete', () => {
  // The engine calls these instead of claim() and complete() on this store: they must pass the
  // same contract. The other operations stay the store's own, on the same records.
  const sync = store.sync;
  if (sync === undefined) throw new Error('the memory store offers no synchronous operations');
  const viaSync: IdempotencyStore = {
    ...store,
    claim: async (input) => sync.claim(input),
    complete: async (key, token, response, ttlMs) => sync.complete(key, token, response, ttlMs),
  };
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => viaSync }));

  it('names the store they belong to, and a spread copy of the store does not carry them', () => {
    expect(sync.store).toBe(store);
    expect({ ...store }.sync).toBeUndefined();
  });
});

describe('memory store: bounds', () => {
  it('evicts the oldest finished records past maxEntries', async () => {
    const small = createMemoryStore({ maxEntries: 3 });
    for (const key of ['a', 'b', 'c', 'd']) {
      const claim = await small.claim({ key, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
      if (claim.status !== 'acquired') throw new Error('expected acquired');
      await small.complete(key, claim.token, { status: 200, headers: [], body: new Uint8Array() }, 60_000);
    }
    expect(small.size).toBe(3);
    expect((await small.claim({ key: 'a', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe('acquired');
    expect((await small.claim({ key: 'd', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe('replay');
    await small.close();
  });

  it('evicts a 64th of the bound at once when a large store overflows, oldest first', async () => {
    const full = createMemoryStore({ maxEntries: 6_400 });
    const done = { status: 200, headers: [], body: new Uint8Array() };
    for (let i = 0; i <= 6_400; i++) {
      const claim = await full.claim({ key: `k${i}`, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
      if (claim.status !== 'acquired') throw new Error('expected acquired');
      await full.complete(`k${i}`, claim.token, done, 60_000);
    }
    expect(full.size).toBe(6_300);
    expect((await full.claim({ key: 'k100', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe(
      'acquired',
    );
    expect((await full.claim({ key: 'k101', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe('replay');
    await full.close();
  });

  it('evicts a released record with its saved steps: the key claimed again starts with none', async () => {
    const small = createMemoryStore({ maxEntries: 2 });
    const first = await small.claim({ key: 'a', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    if (first.status !== 'acquired') throw new Error('expected acquired');
    expect(await small.saveStep('a', first.token, 'charge', '"ch_1"')).toBe('ok');
    expect(await small.release('a', first.token, 60_000)).toBe('ok');
    // Released with its steps kept: a claim now would resume them. Two newer keys push it out.
    expect((await small.inspect?.('a'))?.steps).toEqual(['charge']);
    for (const key of ['b', 'c']) {
      expect((await small.claim({ key, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe('acquired');
    }
    expect(await small.inspect?.('a')).toBeUndefined();
    const again = await small.claim({ key: 'a', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    expect(again).toMatchObject({ status: 'acquired', steps: {}, recovered: false });
    if (again.status !== 'acquired') throw new Error('expected acquired');
    // Nothing of the evicted lifetime may come back: not in inspect, not on the claim after a release.
    expect((await small.inspect?.('a'))?.steps).toEqual([]);
    expect(await small.release('a', again.token, 60_000)).toBe('ok');
    const third = await small.claim({ key: 'a', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    expect(third).toMatchObject({ status: 'acquired', steps: {} });
    await small.close();
  });

  it('never evicts a live in-flight record, even past maxEntries', async () => {
    const small = createMemoryStore({ maxEntries: 2 });
    for (const key of ['a', 'b', 'c']) {
      expect((await small.claim({ key, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe('acquired');
    }
    expect(small.size).toBe(3);
    for (const key of ['a', 'b', 'c']) {
      expect((await small.claim({ key, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe('in_flight');
    }
    await small.close();
  });

  it('sweeps expired records on its timer', async () => {
    const swept = createMemoryStore({ sweepInterval: 50 });
    const claim = await swept.claim({ key: 'x', fingerprint: 'f', leaseMs: 20, ttlMs: 20 });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    await swept.complete('x', claim.token, { status: 200, headers: [], body: new Uint8Array() }, 20);
    expect(swept.size).toBe(1);
    await new Promise((r) => setTimeout(r, 150));
    expect(swept.size).toBe(0);
    await swept.close();
  });

  it('rejects a non-positive maxEntries with a coded error', () => {
    expect(() => createMemoryStore({ maxEntries: 0 })).toThrow(
      expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID' }),
    );
  });
});

describe('memory store: the bytes it keeps', () => {
  const input = { key: 'body', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 };
  const operations = (store: MemoryStore) => {
    const { inspect, rewriteResponse } = store;
    if (inspect === undefined || rewriteResponse === undefined) throw new Error('expected the operations');
    return { inspect, rewriteResponse };
  };
  const bytes = [0x7b, 0x00, 0x80, 0xc3, 0x28, 0xff, 0x7d];

  it('replays the bytes it was given even when the caller changes its buffer afterwards', async () => {
    const own = createMemoryStore();
    const body = Uint8Array.from(bytes);
    const claim = await own.claim(input);
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    await own.complete(input.key, claim.token, { status: 201, headers: [['x-a', '1']], body }, 60_000);
    body.fill(0);
    const replay = await own.claim(input);
    if (replay.status !== 'replay') throw new Error('expected a replay');
    expect([...replay.response.body]).toEqual(bytes);
    expect(replay.response).toMatchObject({ status: 201, headers: [['x-a', '1']] });
    expect([...((await operations(own).inspect(input.key))?.response?.body ?? [])]).toEqual(bytes);
    await own.close();
  });

  it('replays the headers it was given even when the caller changes its header list afterwards', async () => {
    const own = createMemoryStore();
    const claim = await own.claim(input);
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    const headers: [string, string][] = [['x-a', '1']];
    await own.complete(input.key, claim.token, { status: 201, headers, body: new Uint8Array() }, 60_000);
    headers.push(['x-b', '2']);
    (headers[0] as [string, string])[1] = 'changed';
    const replay = await own.claim(input);
    if (replay.status !== 'replay') throw new Error('expected a replay');
    expect(replay.response.headers).toEqual([['x-a', '1']]);
    await own.close();
  });

  it('compares and rewrites a kept body byte for byte', async () => {
    const own = createMemoryStore();
    const claim = await own.claim(input);
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    await own.complete(input.key, claim.token, { status: 200, headers: [], body: Uint8Array.from(bytes) }, 60_000);
    const next = { status: 200, headers: [], body: Uint8Array.from([0xfe, 0x41]) };
    const { inspect, rewriteResponse } = operations(own);
    expect(await rewriteResponse(input.key, Uint8Array.from(bytes.slice(1)), next)).toBe('changed');
    expect(await rewriteResponse(input.key, Uint8Array.from(bytes), next)).toBe('ok');
    next.body.fill(0);
    expect([...((await inspect(input.key))?.response?.body ?? [])]).toEqual([0xfe, 0x41]);
    await own.close();
  });

  it('holds no reference to the buffer a body was a view of', async () => {
    // A body is usually a few bytes cut from a large shared buffer (Node's 8 KiB slabs): holding
    // the view would hold all of it.
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const own = createMemoryStore();
    const claim = await own.claim(input);
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    const weak = ((): WeakRef<ArrayBuffer> => {
      const slab = new ArrayBuffer(1 << 20);
      const body = new Uint8Array(slab, 4096, bytes.length);
      body.set(bytes);
      void own.complete(input.key, claim.token, { status: 200, headers: [], body }, 60_000);
      return new WeakRef(slab);
    })();
    // A WeakRef's target lives at least to the end of the job that made it.
    for (let i = 0; i < 3 && weak.deref() !== undefined; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gc();
    }
    expect(weak.deref()).toBeUndefined();
    const replay = await own.claim(input);
    expect(replay.status === 'replay' && [...replay.response.body]).toEqual(bytes);
    await own.close();
  });
});
