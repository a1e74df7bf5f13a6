// Fencing across processes: an owner frozen with SIGSTOP past its lease loses the key to a new
// owner; once thawed, its late completion is refused and retries replay the new owner's response.
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

const tables: TestTables = testTables('idempo_fence');
const pool = new pg.Pool({ ...SHARED, max: 2 });
pool.on('error', () => {});
let a: AppServer;
let b: AppServer;

beforeAll(async () => {
  await createTables(pool, tables);
  [a, b] = (await Promise.all(
    ['a', 'b'].map((name) => startServer({ ...tables, name, connection: SHARED, lease: 1_000 })),
  )) as [AppServer, AppServer];
});

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  await dropTables(pool, tables);
  await pool.end();
});

/** Whether the one in-flight row (this file's table holds one key) has passed its lease, by the database clock. */
async function leasePassed(): Promise<boolean> {
  const { rows } = await pool.query(
    `SELECT lease_until < clock_timestamp() AS passed FROM "${tables.table}" WHERE state = 'in_flight'`,
  );
  return rows.length === 1 && rows[0].passed === true;
}

it('a stopped owner loses its key past the lease; its late completion is refused', async () => {
  const key = `fence-${randomUUID()}`;
  // A starts the request and holds it in its handler for 2.5 s.
  const first = post(a, key, 2_500);
  await a.until(() => a.ran.includes(key));

  a.child.kill('SIGSTOP');
  try {
    // Frozen, A cannot renew: wait (by the database clock) until its lease has passed.
    await expect.poll(leasePassed, { timeout: 5_000, interval: 100 }).toBe(true);

    // B takes the key over, runs it and completes it.
    const second = await post(b, key);
    expect(second.status).toBe(201);
    expect(second.replayed).toBe(false);
    expect(JSON.parse(second.body).server).toBe('b');
    expect(b.events).toContainEqual(expect.objectContaining({ type: 'recovered', key }));
  } finally {
    a.child.kill('SIGCONT');
  }

  // A wakes up, finishes its handler, and is told it lost the key: its response is not stored.
  await first;
  await a.until(() => a.events.some((e) => e.type === 'lease_lost' && e.key === key));
  expect(a.events.some((e) => e.type === 'executed' && e.key === key)).toBe(false);

  // Retries, to either process, replay B's response.
  const winner = await post(b, key);
  for (const server of [a, b]) {
    const replay = await post(server, key);
    expect(replay.status).toBe(201);
    expect(replay.replayed).toBe(true);
    expect(JSON.parse(replay.body).server).toBe('b');
    expect(replay.body).toBe(winner.body);
  }
  expect((await runCounts(pool, tables)).get(key)).toEqual(['a', 'b']);
});
