import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { createIdempotency } from '../engine/engine.js';
import { createMemoryStore } from '../stores/memory.js';
import { idempoMetrics } from './metrics.js';

/** The value of one series in the registry's text output, or undefined. */
async function value(registry: Registry, series: string): Promise<number | undefined> {
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function post(key: string): Request {
  return new Request('http://test/pay', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: '{"amount":1}',
  });
}

describe('idempoMetrics and per-scope limits', () => {
  it('counts requests a limit refused, by the limit, as outcomes and in idempo_rate_limited_total', async () => {
    const registry = new Registry();
    const idem = createIdempotency({
      store: createMemoryStore(),
      limits: { newKeys: { max: 1, window: '1m' } },
      observe: idempoMetrics({ registry, storeName: 'memory' }),
    });
    const ok = async () => new Response('ok', { status: 201 });
    expect((await idem.handle(post('a'), ok)).status).toBe(201);
    expect((await idem.handle(post('b'), ok)).status).toBe(429);
    expect((await idem.handle(post('c'), ok)).status).toBe(429);
    expect(await value(registry, 'idempo_rate_limited_total{limit="new_keys",route=""}')).toBe(2);
    expect(await value(registry, 'idempo_outcomes_total{type="rate_limited",route=""}')).toBe(2);
    expect(await value(registry, 'idempo_request_duration_seconds_count{type="rate_limited",route=""}')).toBe(2);
    // Refused before the claim: the store saw one claim, a's.
    expect(
      await value(registry, 'idempo_store_operations_total{operation="claim",store="memory",result="acquired"}'),
    ).toBe(1);
  });
});
