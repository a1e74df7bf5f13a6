// Store outage: a private PostgreSQL cluster is stopped (`pg_ctl stop -m immediate`, a crash) in
// the middle of a steady load and started again. While it is down every request gets 503 and runs
// nothing (fail-closed); a request whose handler ran but whose completion the crash cut never gets
// a success that no retry replays (it gets its stored result, or 503 IDEMPO_RESULT_NOT_STORED); once
// the server is back the same app, same pool, same store, serves again; and no key is left stuck
// past its lease.
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createIdempotency } from '../../src/index.js';
import { createPostgresStore, type PostgresStore } from '../../src/stores/postgres.js';
import { type PostgresCluster, startPostgresCluster } from '../helpers/postgres-cluster.js';
import { sleep } from './harness.js';

const LEASE_MS = 1_500;

let cluster: PostgresCluster;
let pool: pg.Pool;
let store: PostgresStore;

beforeAll(async () => {
  cluster = await startPostgresCluster();
  // A short connect timeout so requests fail fast while the server is gone; idle connections the
  // crash cut must not crash the app.
  pool = new pg.Pool({ ...cluster.connection, max: 8, connectionTimeoutMillis: 1_000 });
  pool.on('error', () => {});
  store = createPostgresStore({ pool, sweepInterval: false });
  await store.migrate();
});

afterAll(async () => {
  await store?.close();
  await pool?.end();
  await cluster?.destroy();
});

type Phase = 'up' | 'stopping' | 'down' | 'restarting' | 'back';

/** Began and ended while the server was up, before the outage or after it. */
function steady(o: Outcome): boolean {
  return o.began === o.ended && (o.began === 'up' || o.began === 'back');
}

interface Outcome {
  key: string;
  /** The phase when the request started and when its response arrived. */
  began: Phase;
  ended: Phase;
  status: number;
  /** idempo's problem code, when the answer was one. */
  code: string | undefined;
}

it('fails closed during the outage and resumes after it without restarting the app', async () => {
  const idem = createIdempotency({ store, lease: LEASE_MS, ttl: '1h' });
  const executions = new Map<string, number>();
  const handler = async (request: Request) => {
    const key = request.headers.get('idempotency-key') as string;
    executions.set(key, (executions.get(key) ?? 0) + 1);
    await sleep(10);
    return new Response(`paid ${key}`, { status: 201 });
  };
  const send = (key: string) =>
    idem.handle(
      new Request('http://app.test/pay', {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body: '{"amount":100}',
      }),
      handler,
    );

  let phase: Phase = 'up';
  let running = true;
  let next = 0;
  const outcomes: Outcome[] = [];
  // An open load: each worker sends every 25 ms without waiting for answers, since a request whose
  // completion meets the crash is held while it is retried and must not hold the load up.
  const one = async (key: string) => {
    const began = phase;
    const response = await send(key);
    const text = await response.text();
    const code = response.status === 201 ? undefined : (JSON.parse(text) as { code?: string }).code;
    outcomes.push({ key, began, ended: phase, status: response.status, code });
  };
  const worker = async () => {
    const pending: Promise<void>[] = [];
    while (running) {
      pending.push(one(`outage-${next++}`));
      await sleep(25);
    }
    await Promise.all(pending);
  };
  const workers = Array.from({ length: 6 }, worker);

  await sleep(500);
  phase = 'stopping';
  await cluster.stop('immediate');
  phase = 'down';
  await sleep(800);
  phase = 'restarting';
  await cluster.start();
  phase = 'back';
  // The same pool reconnects on its own: wait for the first success after the restart, then keep the load on a little.
  await expect
    .poll(() => outcomes.some((o) => o.began === 'back' && o.status === 201), { timeout: 10_000, interval: 50 })
    .toBe(true);
  await sleep(300);
  running = false;
  await Promise.all(workers);

  const up = outcomes.filter((o) => o.began === 'up' && o.ended === 'up');
  const down = outcomes.filter((o) => o.began === 'down' && o.ended === 'down');
  const back = outcomes.filter((o) => o.began === 'back');
  expect(up.length).toBeGreaterThan(0);
  expect(down.length).toBeGreaterThan(0);
  expect(up.every((o) => o.status === 201)).toBe(true);
  // Fail-closed: every request that met the outage got 503 and ran nothing.
  expect(down.filter((o) => o.status !== 503 || o.code !== 'IDEMPO_STORE_UNAVAILABLE')).toEqual([]);
  expect(down.filter((o) => executions.has(o.key))).toEqual([]);
  // Resumed: once the first request after the restart succeeded, all the later ones did.
  const firstOk = back.findIndex((o) => o.status === 201);
  expect(back.slice(firstOk).filter((o) => o.status !== 201)).toEqual([]);

  // No key stuck past its lease: after one lease, a retry of every key used gets an answer, never
  // 409 or 503. Keys that got 503 run now, once; keys that completed replay.
  await sleep(LEASE_MS + 200);
  // (In small batches: the pool's connectionTimeoutMillis also bounds the wait for a free client.)
  const retries: (Outcome & { retry: Response })[] = [];
  for (let i = 0; i < outcomes.length; i += 12) {
    const batch = outcomes.slice(i, i + 12);
    retries.push(...(await Promise.all(batch.map(async (o) => ({ ...o, retry: await send(o.key) })))));
  }
  expect(retries.filter((r) => r.retry.status !== 201).map((r) => [r.key, r.retry.status])).toEqual([]);
  // Every success a client got was stored first, whenever it came (a completion the crash cut is
  // retried with the response held): its retry replays it, and its handler ran once.
  const succeeded = retries.filter((r) => r.status === 201);
  expect(succeeded.filter(steady).length).toBeGreaterThan(0);
  for (const r of succeeded) {
    expect(r.retry.headers.get('idempotent-replayed'), r.key).toBe('true');
    expect(executions.get(r.key), r.key).toBe(1);
  }
  // A request refused by the store ran nothing then; its retry ran it, once.
  const refused = retries.filter((r) => r.code === 'IDEMPO_STORE_UNAVAILABLE');
  expect(refused.length).toBeGreaterThan(0);
  for (const r of refused) expect(executions.get(r.key), r.key).toBe(1);
  // Nothing else: a 503 either says the store was unreachable before the handler, or that the
  // handler ran and its result could not be stored.
  const notStored = retries.filter((r) => r.code === 'IDEMPO_RESULT_NOT_STORED');
  expect(retries.filter((r) => r.status !== 201 && !refused.includes(r) && !notStored.includes(r))).toEqual([]);
  // Only a key whose caller was told its result was not stored may run again, once, and only
  // after its lease passed (the retry above came after it).
  const twice = [...executions].filter(([, n]) => n > 1).map(([key]) => key);
  expect(twice.filter((key) => !notStored.some((r) => r.key === key))).toEqual([]);
  expect([...executions.values()].every((n) => n <= 2)).toBe(true);
});
