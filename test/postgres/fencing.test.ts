// Fencing across processes: an owner frozen with SIGSTOP past its lease loses the key to a new
// owner; once thawed, its late completion is refused and retries replay the new owner's response.
// Its own caller never gets a clean success: `409 IDEMPO_LEASE_LOST` while nothing had been sent,
// a broken response once the head was on the wire.
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

/** Whether the one in-flight row (this file runs one key in flight at a time) has passed its lease, by the database clock. */
async function leasePassed(): Promise<boolean> {
  const { rows } = await pool.query(
    `SELECT lease_until < clock_timestamp() AS passed FROM "${tables.table}" WHERE state = 'in_flight'`,
  );
  return rows.length === 1 && rows[0].passed === true;
}

/** A keyed POST whose handler, on `server`, answers `respond`-style after `delayMs`. */
function postTo(server: AppServer, key: string, delayMs: number, respond: 'status' | 'head-first') {
  return fetch(`${server.url}/pay`, {
    method: 'POST',
    headers: {
      'idempotency-key': key,
      'content-type': 'application/json',
      'x-delay': String(delayMs),
      'x-respond': respond,
    },
    body: '{"amount":100}',
  });
}

/** Freezes A past its lease, lets B take `key` over, then thaws A. */
async function takeOverFromA(key: string): Promise<void> {
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
}

/** A was told it lost the key, stored nothing, and every retry, to either process, replays B's response. */
async function expectRetriesReplayB(key: string): Promise<void> {
  await a.until(() => a.events.some((e) => e.type === 'lease_lost' && e.key === key));
  expect(a.events.some((e) => e.type === 'executed' && e.key === key)).toBe(false);
  const winner = await post(b, key);
  expect(winner.replayed).toBe(true);
  for (const server of [a, b, a]) {
    const replay = await post(server, key);
    expect(replay.status).toBe(201);
    expect(replay.replayed).toBe(true);
    expect(JSON.parse(replay.body).server).toBe('b');
    expect(replay.body).toBe(winner.body);
  }
  expect((await runCounts(pool, tables)).get(key)).toEqual(['a', 'b']);
}

it('a stopped owner loses its key past the lease; its caller gets 409 IDEMPO_LEASE_LOST, not its success', async () => {
  const key = `fence-${randomUUID()}`;
  // A starts the request and holds it in its handler for 2.5 s, with nothing written yet.
  const first = postTo(a, key, 2_500, 'status');
  await a.until(() => a.ran.includes(key));
  await takeOverFromA(key);

  // A wakes up, finishes its handler, and is told it lost the key: its caller gets idempo's 409.
  const late = await first;
  expect(late.status).toBe(409);
  expect(late.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  expect(late.headers.get('idempotent-replayed')).toBeNull();
  expect(Number(late.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  expect(await late.json()).toMatchObject({ status: 409, code: 'IDEMPO_LEASE_LOST' });
  await expectRetriesReplayB(key);
});

it('a stopped owner whose head went out has its response broken, never a clean 201', async () => {
  const key = `fence-head-${randomUUID()}`;
  // A writes and flushes its 201 head, then holds the body for 2.5 s.
  const first = await postTo(a, key, 2_500, 'head-first');
  expect(first.status).toBe(201); // the head is on the wire before A is frozen
  expect(a.ran).toContain(key);
  await takeOverFromA(key);

  // A ends the body under its stale token: the completion is refused and the connection is cut.
  const body = await first.text().then(
    (text) => ({ text }),
    (error: unknown) => ({ error }),
  );
  expect(body).toHaveProperty('error');
  expect(body).not.toHaveProperty('text');
  await expectRetriesReplayB(key);
});
