import { describe, expect, it } from 'vitest';
import { createIdempotency } from '../engine/engine.js';
import { createMemoryStore } from '../stores/memory.js';
import { createKeyUsage, type UsageThresholdEvent } from './usage.js';

function post(tenant: string, key: string, body = '{"amount":1}'): Request {
  return new Request('http://test/pay', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key, 'x-tenant': tenant },
    body,
  });
}

describe('createKeyUsage', () => {
  it('counts new keys, replays and mismatches per scope from the engine, and ranks the top scopes', async () => {
    const crossed: UsageThresholdEvent[] = [];
    const usage = createKeyUsage({
      scope: (request) => request.header('x-tenant'),
      thresholds: { mismatches: 3 },
      onThreshold: (event) => crossed.push(event),
    });
    const idem = createIdempotency({ store: createMemoryStore(), observe: usage });
    const ok = async () => new Response('ok', { status: 201 });
    await idem.handle(post('acme', 'a1'), ok);
    await idem.handle(post('acme', 'a1'), ok);
    await idem.handle(post('acme', 'a2'), ok);
    for (let i = 0; i < 4; i++) await idem.handle(post('probe', 'a1', `{"amount":${i + 2}}`), ok);

    expect(usage.counts('acme')).toEqual({ new_keys: 2, replays: 1, conflicts: 0, mismatches: 0, invalid_keys: 0 });
    // Keys are per scope only when the engine scopes them: here "probe" reused acme's key.
    expect(usage.counts('probe').mismatches).toBe(4);
    expect(usage.top('mismatches')).toEqual({ top: [{ scope: 'probe', count: 4 }], other: 0 });
    expect(usage.top('new_keys', 1)).toEqual({ top: [{ scope: 'acme', count: 2 }], other: 0 });
    // Told once, when the count reached the threshold, not again at 4.
    expect(crossed).toEqual([{ scope: 'probe', counter: 'mismatches', count: 3, threshold: 3, windowMs: 300_000 }]);
  });

  it('forgets what slid out of the window', () => {
    const usage = createKeyUsage({ window: '60s' });
    const t0 = Date.now() - 120_000;
    for (let i = 0; i < 5; i++) usage.record('old', 'conflict', t0);
    usage.record('old', 'conflict');
    expect(usage.counts('old').conflicts).toBe(1);
  });

  it('tracks at most maxScopes scopes, forgetting the least recently active', () => {
    const usage = createKeyUsage({ maxScopes: 3 });
    for (const scope of ['a', 'b', 'c']) usage.record(scope, 'replayed');
    usage.record('a', 'replayed');
    usage.record('d', 'replayed');
    expect(usage.size()).toBe(3);
    expect(usage.counts('b').replays).toBe(0);
    expect(usage.counts('a').replays).toBe(2);
    expect(usage.top('replays', 2)).toEqual({
      top: [
        { scope: 'a', count: 2 },
        { scope: 'c', count: 1 },
      ],
      other: 1,
    });
  });
});
