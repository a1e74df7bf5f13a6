// Retention through the engine: a completed record is gone after its ttl (the sweep deletes the
// row, and the key runs afresh), and an in-flight record abandoned by a crashed process (SIGKILL)
// blocks its key only until its lease passes.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createIdempotency } from '../../src/index.js';
import { createPostgresStore } from '../../src/stores/postgres.js';
import { createTables, dropTables, SHARED, startServer, type TestTables, testTables } from './harness.js';

const tables: TestTables = testTables('idempo_ret');
const pool = new pg.Pool({ ...SHARED, max: 4 });
pool.on('error', () => {});
const store = createPostgresStore({
  pool,
  table: tables.table,
  migrationsTable: tables.migrationsTable,
  sweepInterval: 200,
});

beforeAll(() => createTables(pool, tables));

afterAll(async () => {
  await store.close();
  await dropTables(pool, tables);
  await pool.end();
});

function request(key: string): Request {
  return new Request('http://app.test/pay', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', 'x-delay': '60000' },
    body: '{"amount":100}',
  });
}

async function rowCount(): Promise<number> {
  return (await pool.query(`SELECT 1 FROM "${tables.table}"`)).rowCount ?? 0;
}

it('a completed record disappears after its ttl and the key runs again', async () => {
  const idem = createIdempotency({ store, lease: 500, ttl: 1_000 });
  const key = `ret-${randomUUID()}`;
  let runs = 0;
  const handler = () => new Response(`run ${++runs}`, { status: 201 });

  const first = await idem.handle(request(key), handler);
  expect(await first.text()).toBe('run 1');
  const replay = await idem.handle(request(key), handler);
  expect(replay.headers.get('idempotent-replayed')).toBe('true');
  expect(await replay.text()).toBe('run 1');

  // The sweep timer deletes the row once the ttl has passed.
  await expect.poll(rowCount, { timeout: 5_000, interval: 100 }).toBe(0);
  const again = await idem.handle(request(key), handler);
  expect(again.headers.get('idempotent-replayed')).toBeNull();
  expect(await again.text()).toBe('run 2');
});

it('an in-flight record abandoned by a killed process is claimable once its lease passes', async () => {
  const key = `ret-${randomUUID()}`;
  const crashed = await startServer({ ...tables, name: 'crashed', connection: SHARED, lease: 2_000 });
  const pending = fetch(`${crashed.url}/pay`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', 'x-delay': '60000' },
    body: '{"amount":100}',
  }).catch(() => undefined);
  await crashed.until(() => crashed.ran.includes(key));
  crashed.child.kill('SIGKILL');
  await pending;

  const idem = createIdempotency({ store, lease: 1_000, ttl: '1h' });
  let recovered: boolean | undefined;
  let runs = 0;
  const handler = (_request: Request, ctx: { recovered: boolean }) => {
    runs++;
    recovered = ctx.recovered;
    return new Response('recovered run', { status: 201 });
  };

  // While the dead owner's lease lasts, the key is held: 409 with Retry-After, nothing runs.
  const held = await idem.handle(request(key), handler);
  expect(held.status).toBe(409);
  expect(Number(held.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  expect(runs).toBe(0);

  // Once it passes, the next request takes the key over and runs.
  await expect
    .poll(async () => (await idem.handle(request(key), handler)).status, { timeout: 8_000, interval: 200 })
    .toBe(201);
  expect(recovered).toBe(true);
  expect(runs).toBe(1);
  const replay = await idem.handle(request(key), handler);
  expect(replay.headers.get('idempotent-replayed')).toBe('true');
  expect(await replay.text()).toBe('recovered run');
});
