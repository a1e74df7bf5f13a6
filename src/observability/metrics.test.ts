import type { AddressInfo } from 'node:net';
import express from 'express';
import Fastify from 'fastify';
import { Registry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency } from '../adapters/express.js';
import idempoFastify from '../adapters/fastify.js';
import { createIdempotency } from '../engine/engine.js';
import { createMemoryStore } from '../stores/memory.js';
import { idempoMetrics } from './metrics.js';
import { createKeyUsage } from './usage.js';

function post(key: string | undefined, body = '{"amount":1}', path = '/pay'): Request {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (key !== undefined) headers['idempotency-key'] = key;
  return new Request(`http://test${path}`, { method: 'POST', headers, body });
}

/** The value of one series in the registry's text output, or undefined. */
async function value(registry: Registry, series: string): Promise<number | undefined> {
  const text = await registry.metrics();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const closers: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (closers.length > 0) await closers.pop()?.();
});

describe('idempoMetrics', () => {
  it('counts outcomes by type, releases by reason, and times requests, handlers and store calls', async () => {
    const registry = new Registry();
    const idem = createIdempotency({
      store: createMemoryStore(),
      observe: idempoMetrics({ registry, storeName: 'memory' }),
    });
    const ok = async () => Response.json({ id: 1 }, { status: 201 });
    expect((await idem.handle(post('a'), ok)).status).toBe(201);
    expect((await idem.handle(post('a'), ok)).headers.get('idempotent-replayed')).toBe('true');
    expect((await idem.handle(post('a'), ok)).status).toBe(201);
    expect((await idem.handle(post('a', '{"amount":2}'), ok)).status).toBe(422);
    expect((await idem.handle(post(' bad key'), ok)).status).toBe(400);
    expect((await idem.handle(post('b'), async () => new Response('down', { status: 503 }))).status).toBe(503);
    const threw = await idem.handle(post('c'), async () => {
      throw new Error('boom');
    });
    expect(threw.status).toBe(500);

    expect(await value(registry, 'idempo_outcomes_total{type="executed",route=""}')).toBe(1);
    expect(await value(registry, 'idempo_outcomes_total{type="replayed",route=""}')).toBe(2);
    expect(await value(registry, 'idempo_outcomes_total{type="mismatch",route=""}')).toBe(1);
    expect(await value(registry, 'idempo_outcomes_total{type="invalid_key",route=""}')).toBe(1);
    expect(await value(registry, 'idempo_outcomes_total{type="released",route=""}')).toBe(2);
    expect(await value(registry, 'idempo_releases_total{reason="status",route=""}')).toBe(1);
    expect(await value(registry, 'idempo_releases_total{reason="threw",route=""}')).toBe(1);
    expect(await value(registry, 'idempo_request_duration_seconds_count{type="replayed",route=""}')).toBe(2);
    expect(await value(registry, 'idempo_handler_duration_seconds_count{result="completed",store="memory"}')).toBe(1);
    expect(await value(registry, 'idempo_handler_duration_seconds_count{result="released",store="memory"}')).toBe(2);
    // Five claims reached the store (the malformed key did not); the memory store answers them synchronously.
    expect(
      await value(registry, 'idempo_store_operation_duration_seconds_count{operation="claim",store="memory"}'),
    ).toBe(6);
    expect(
      await value(registry, 'idempo_store_operations_total{operation="claim",store="memory",result="replay"}'),
    ).toBe(2);
    expect(await value(registry, 'idempo_store_operations_total{operation="release",store="memory",result="ok"}')).toBe(
      2,
    );
    expect(await value(registry, 'idempo_keys_in_flight{store="memory"}')).toBe(0);
  });

  it('keeps the memory store synchronous when watched, and counts keys in flight while handlers run', async () => {
    const registry = new Registry();
    const metrics = idempoMetrics({ registry });
    const store = metrics.wrapStore?.(createMemoryStore());
    expect(store?.sync?.store).toBe(store);

    const idem = createIdempotency({ store: createMemoryStore(), observe: metrics });
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const slow = idem.handle(post('slow'), async () => {
      await gate;
      return new Response('ok');
    });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(await value(registry, 'idempo_keys_in_flight{store="default"}')).toBe(1);
    expect((await idem.handle(post('slow'), async () => new Response('never'))).status).toBe(409);
    expect(await value(registry, 'idempo_outcomes_total{type="conflict",route=""}')).toBe(1);
    finish();
    await slow;
    expect(await value(registry, 'idempo_keys_in_flight{store="default"}')).toBe(0);
  });

  it('stops counting a key in flight once its lease passes unrenewed (a run whose process gave up on it)', async () => {
    const metrics = idempoMetrics({ registry: new Registry() });
    const idem = createIdempotency({ store: createMemoryStore(), lease: 80, observe: metrics });
    const decision = await idem.begin({
      method: 'POST',
      url: '/pay',
      header: (name) => (name === 'idempotency-key' ? 'gone' : undefined),
      body: async () => null,
    });
    expect(decision.action).toBe('execute');
    // The client left and nothing tracks the work: the lease is no longer renewed.
    if (decision.action === 'execute') decision.clientGone();
    expect(metrics.keysInFlight()).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 120));
    expect(metrics.keysInFlight()).toBe(0);
  });

  it("counts the duplicates that waited (concurrent: 'wait') by how the wait ended", async () => {
    const registry = new Registry();
    const idem = createIdempotency({
      store: createMemoryStore(),
      concurrent: 'wait',
      waitTimeout: '5s',
      observe: idempoMetrics({ registry }),
    });
    const first = idem.handle(post('w'), async () => {
      await new Promise((resolve) => setTimeout(resolve, 80));
      return new Response('done', { status: 201 });
    });
    await new Promise((resolve) => setTimeout(resolve, 10));
    const second = await idem.handle(post('w'), async () => new Response('never'));
    expect(second.status).toBe(201);
    await first;
    expect(await value(registry, 'idempo_waits_total{result="replay",store="default"}')).toBe(1);
    expect(await value(registry, 'idempo_wait_duration_seconds_count{store="default"}')).toBe(1);
  });

  it('counts store errors by operation and action, from a store that fails', async () => {
    const registry = new Registry();
    const memory = createMemoryStore();
    const { sync: _sync, ...asynchronous } = memory;
    const failing = { ...asynchronous, claim: async () => Promise.reject(new Error('down')) };
    const idem = createIdempotency({ store: failing, observe: idempoMetrics({ registry, storeName: 'flaky' }) });
    expect((await idem.handle(post('x'), async () => new Response('ok'))).status).toBe(503);
    expect(await value(registry, 'idempo_store_errors_total{operation="claim",action="fail-closed"}')).toBe(1);
    expect(await value(registry, 'idempo_store_operations_total{operation="claim",store="flaky",result="error"}')).toBe(
      1,
    );
  });

  it('labels by the route pattern Express matched, never the raw path', async () => {
    const registry = new Registry();
    const idem = createIdempotency({ store: createMemoryStore(), observe: idempoMetrics({ registry }) });
    const app = express();
    app.post('/orders/:id', idempotency({ idempotency: idem }), (_req, res) => {
      res.status(201).json({ ok: true });
    });
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    closers.push(() => new Promise((resolve) => server.close(() => resolve())));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    for (const id of ['o_1', 'o_2']) {
      const response = await fetch(`${url}/orders/${id}`, { method: 'POST', headers: { 'idempotency-key': id } });
      expect(response.status).toBe(201);
    }
    expect(await value(registry, 'idempo_outcomes_total{type="executed",route="/orders/:id"}')).toBe(2);
    expect(await registry.metrics()).not.toContain('o_1');
  });

  it('labels by the route URL Fastify registered', async () => {
    const registry = new Registry();
    const app = Fastify();
    await app.register(idempoFastify, { store: createMemoryStore(), observe: idempoMetrics({ registry }) });
    app.post('/carts/:id/checkout', async (_request, reply) => reply.code(201).send({ ok: true }));
    await app.listen({ port: 0, host: '127.0.0.1' });
    closers.push(() => app.close());
    const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    const send = () =>
      fetch(`${url}/carts/c_9/checkout`, {
        method: 'POST',
        headers: { 'idempotency-key': 'k1', 'content-type': 'application/json' },
        body: '{}',
      });
    expect((await send()).status).toBe(201);
    expect((await send()).headers.get('idempotent-replayed')).toBe('true');
    expect(await value(registry, 'idempo_outcomes_total{type="executed",route="/carts/:id/checkout"}')).toBe(1);
    expect(await value(registry, 'idempo_outcomes_total{type="replayed",route="/carts/:id/checkout"}')).toBe(1);
  });

  it('exports key usage as the top scopes of each counter and the rest as other', async () => {
    const registry = new Registry();
    const usage = createKeyUsage({ scope: (request) => request.header('x-tenant'), topN: 2 });
    idempoMetrics({ registry, usage });
    for (const [tenant, n] of [
      ['t1', 5],
      ['t2', 3],
      ['t3', 2],
      ['t4', 1],
    ] as const) {
      for (let i = 0; i < n; i++) usage.record(tenant, 'mismatch');
    }
    expect(await value(registry, 'idempo_scope_events{counter="mismatches",scope="t1"}')).toBe(5);
    expect(await value(registry, 'idempo_scope_events{counter="mismatches",scope="t2"}')).toBe(3);
    expect(await value(registry, 'idempo_scope_events{counter="mismatches",scope="t3"}')).toBeUndefined();
    expect(await value(registry, 'idempo_scope_events{counter="mismatches",scope="other"}')).toBe(3);
    expect(await value(registry, 'idempo_scopes_tracked')).toBe(4);
  });
});
