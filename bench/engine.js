/**
 * The engine's own cost, without HTTP: `idem.begin()` plus `commit()` on a fresh key, and
 * `begin()` on a completed key, against the memory store and against a stub store that answers
 * at once (so the figures separate the engine from the store). CPU µs per operation, median of
 * five rounds. `memory-full` is the memory store already holding its bound of records (so
 * every claim evicts). For before/after figures of hot-path changes:
 *
 *   npm run build && node bench/engine.js [REGEX of the store names to run]
 */
import { createIdempotency } from 'idempo';
import { createMemoryStore } from 'idempo/memory';
import { STORED_RESPONSE as RESPONSE } from './lib/app.js';
import { median } from './lib/report.js';

const BODY = Buffer.from(JSON.stringify({ amount: 1999, currency: 'usd', customer: 'cus_8f2k3', capture: true }));

/** Acquires every new key and replays every known one, doing no more than a Map lookup. */
function stubStore() {
  const done = new Map();
  const ok = async () => 'ok';
  return {
    async claim({ key }) {
      const response = done.get(key);
      if (response) return { status: 'replay', response };
      return { status: 'acquired', token: 1, steps: {}, recovered: false };
    },
    async complete(key, _token, response) {
      done.set(key, response);
      return 'ok';
    },
    release: ok,
    renew: ok,
    saveStep: ok,
  };
}

function request(key) {
  const headers = { 'content-type': 'application/json', 'idempotency-key': key };
  return { method: 'POST', url: '/payments', header: (name) => headers[name], body: async () => BODY };
}

async function measure(idem, keyOf, ops) {
  const before = process.cpuUsage();
  for (let i = 0; i < ops; i++) {
    const decision = await idem.begin(request(keyOf(i)));
    if (decision.action === 'execute') await decision.commit(RESPONSE);
  }
  const cpu = process.cpuUsage(before);
  return (cpu.user + cpu.system) / ops;
}

const OPS = 40_000;
const FULL = 20_000;

/** A memory store that holds its bound of completed records, so every new claim evicts. */
async function fullMemoryStore() {
  const store = createMemoryStore({ maxEntries: FULL });
  for (let i = 0; i < FULL; i++) {
    const claim = await store.claim({ key: `fill-${i}`, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    await store.complete(`fill-${i}`, claim.token, RESPONSE, 60_000);
  }
  return store;
}

/**
 * Observers for the cost of observing (issue 17): Prometheus metrics; or metrics, key usage and
 * traces through an OpenTelemetry SDK that batches spans to an exporter dropping them.
 */
async function observers(which) {
  const { Registry } = await import('prom-client');
  const { idempoMetrics } = await import('idempo/metrics');
  const registry = new Registry();
  if (which === 'metrics') return [idempoMetrics({ registry, storeName: 'memory' })];
  const { createKeyUsage } = await import('idempo/usage');
  if (which === 'usage') return [createKeyUsage({ scope: () => 'tenant' })];
  const { idempoTracing } = await import('idempo/tracing');
  const { BasicTracerProvider, BatchSpanProcessor } = await import('@opentelemetry/sdk-trace-base');
  const dropping = { export: (_spans, done) => done({ code: 0 }), shutdown: async () => {} };
  const provider = new BasicTracerProvider({ spanProcessors: [new BatchSpanProcessor(dropping)] });
  const tracing = idempoTracing({ tracer: provider.getTracer('bench') });
  if (which === 'tracing') return [tracing];
  const usage = createKeyUsage({ scope: () => 'tenant' });
  return [idempoMetrics({ registry, storeName: 'memory', usage }), usage, tracing];
}

const only = process.argv[2] ? new RegExp(process.argv[2]) : undefined;
for (const [storeName, makeStore, workloads, observe] of [
  ['stub', stubStore, ['fresh', 'replay']],
  ['memory', () => createMemoryStore(), ['fresh', 'replay']],
  ['memory-full', fullMemoryStore, ['fresh']],
  ['memory+metrics', () => createMemoryStore(), ['fresh', 'replay'], 'metrics'],
  ['memory+usage', () => createMemoryStore(), ['fresh', 'replay'], 'usage'],
  ['memory+tracing', () => createMemoryStore(), ['fresh', 'replay'], 'tracing'],
  ['memory+all', () => createMemoryStore(), ['fresh', 'replay'], 'all'],
]) {
  if (only && !only.test(storeName)) continue;
  for (const workload of workloads) {
    const rounds = [];
    for (let round = 0; round < 6; round++) {
      // A new engine and store per round, so the memory store's size stays the same.
      const idem = createIdempotency({
        store: await makeStore(),
        ...(observe ? { observe: await observers(observe) } : {}),
      });
      if (workload === 'replay') await measure(idem, (i) => `pool-${i}`, 1000);
      let next = 0;
      const keyOf = workload === 'fresh' ? () => `key-${round}-${next++}` : (i) => `pool-${i % 1000}`;
      const us = await measure(idem, keyOf, OPS);
      if (round > 0) rounds.push(us); // the first round warms the JIT up
    }
    console.log(
      `${storeName.padEnd(14)} ${workload.padEnd(6)} ${median(rounds).toFixed(2)} µs CPU/op  (rounds: ${rounds.map((r) => r.toFixed(1)).join(' ')})`,
    );
  }
}
