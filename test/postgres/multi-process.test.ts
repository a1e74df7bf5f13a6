// Four app server processes share one PostgreSQL table; 50 keys are each sent to all four at
// once. Every key must run exactly once, and every duplicate must get that run's response.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  type AppServer,
  createTables,
  dropTables,
  post,
  runCounts,
  SHARED,
  startServer,
  type TestTables,
  testTables,
} from './harness.js';

const tables: TestTables = testTables('idempo_mp');
const pool = new pg.Pool({ ...SHARED, max: 2 });
pool.on('error', () => {});
let servers: AppServer[] = [];

beforeAll(async () => {
  await createTables(pool, tables);
  servers = await Promise.all(
    [1, 2, 3, 4].map((n) =>
      startServer({ ...tables, name: `app${n}`, connection: SHARED, concurrent: 'wait', waitTimeout: '20s' }),
    ),
  );
});

afterAll(async () => {
  await Promise.all(servers.map((s) => s.stop()));
  await dropTables(pool, tables);
  await pool.end();
});

it('4 processes x 50 concurrent requests on the same keys: each key runs exactly once', async () => {
  const keys = Array.from({ length: 50 }, (_, i) => `mp-${randomUUID()}-${i}`);
  const results = await Promise.all(
    servers.flatMap((server) => keys.map(async (key) => ({ key, ...(await post(server, key, 20)) }))),
  );
  expect(results).toHaveLength(200);
  expect(results.filter((r) => r.status !== 201)).toEqual([]);

  const runs = await runCounts(pool, tables);
  for (const key of keys) expect(runs.get(key), key).toHaveLength(1);
  expect(runs.size).toBe(50);

  for (const key of keys) {
    const forKey = results.filter((r) => r.key === key);
    // One process ran it; the three others replayed its response byte for byte.
    expect(forKey.filter((r) => !r.replayed)).toHaveLength(1);
    expect(new Set(forKey.map((r) => r.body)).size).toBe(1);
    expect(JSON.parse(forKey[0]?.body ?? '{}').server).toBe(runs.get(key)?.[0]);
  }

  // A second wave, all retries: replays from whichever process, nothing runs again.
  const again = await Promise.all(servers.flatMap((server) => keys.map((key) => post(server, key, 20))));
  expect(again.every((r) => r.status === 201 && r.replayed)).toBe(true);
  expect((await runCounts(pool, tables)).size).toBe(50);
  expect([...(await runCounts(pool, tables)).values()].every((r) => r.length === 1)).toBe(true);
});
