import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresStore, type PostgresStore } from './postgres.js';
import { groupCommit } from './postgres-group-commit.js';

// The shared test server: trust auth, database `test`; this file's tables carry a per-run suffix.
const CONNECTION = { host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' } as const;
const SUFFIX = randomUUID().replaceAll('-', '').slice(0, 12);
const TABLE = `idempo_gc_${SUFFIX}`;
const MIGRATIONS = `idempo_gc_migrations_${SUFFIX}`;
const DAY = 86_400_000;
const claimOf = (key: string, fingerprint = 'f') => ({ key, fingerprint, leaseMs: 60_000, ttlMs: DAY });

/** A real pool whose statements on the store's table are counted (everything still goes to the server). */
function countingPool(): pg.Pool & { statements: number } {
  const pool = new pg.Pool({ ...CONNECTION, max: 10 }) as pg.Pool & { statements: number };
  pool.on('error', () => {});
  pool.statements = 0;
  const query = pool.query.bind(pool) as (...args: unknown[]) => unknown;
  (pool as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
    const text = typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text;
    if (text?.includes(TABLE) && !text.includes(MIGRATIONS)) pool.statements++;
    return query(...args);
  };
  return pool;
}

let pool: pg.Pool & { statements: number };
let other: pg.Pool;
let store: PostgresStore;
let otherStore: PostgresStore;

beforeAll(async () => {
  pool = countingPool();
  other = new pg.Pool({ ...CONNECTION, max: 10 });
  other.on('error', () => {});
  const options = { table: TABLE, migrationsTable: MIGRATIONS, sweepInterval: false as const };
  store = createPostgresStore({ pool, ...options });
  await store.migrate();
  otherStore = createPostgresStore({ pool: other, ...options });
});

afterAll(async () => {
  await store.close();
  await otherStore.close();
  await pool.query(`DROP TABLE IF EXISTS ${TABLE}, ${MIGRATIONS}`);
  await pool.end();
  await other.end();
});

describe('postgres store: group commit', () => {
  it('claims and completes 100 keys issued together in a handful of statements', async () => {
    const keys = Array.from({ length: 100 }, (_, i) => `many-${i}`);
    const before = pool.statements;
    const claims = await Promise.all(keys.map((key) => store.claim(claimOf(key))));
    const claimStatements = pool.statements - before;
    expect(claims.every((c) => c.status === 'acquired')).toBe(true);
    const results = await Promise.all(
      keys.map((key, i) => {
        const claim = claims[i];
        if (claim?.status !== 'acquired') throw new Error('expected acquired');
        return store.complete(key, claim.token, { status: 201, headers: [['x', key]], body: Buffer.from(key) }, DAY);
      }),
    );
    const completeStatements = pool.statements - before - claimStatements;
    expect(results).toEqual(keys.map(() => 'ok'));
    expect(claimStatements).toBeLessThanOrEqual(3);
    expect(completeStatements).toBeLessThanOrEqual(3);
    // Each got its own record back: the batch did not mix rows up.
    for (const key of ['many-0', 'many-57', 'many-99']) {
      const replay = await store.claim(claimOf(key));
      expect(replay.status).toBe('replay');
      if (replay.status === 'replay') {
        expect(Buffer.from(replay.response.body).toString()).toBe(key);
        expect(replay.response.headers).toEqual([['x', key]]);
      }
    }
  });

  it('answers each claim of one batch by its own fingerprint: acquired, in flight, mismatch', async () => {
    const first = await Promise.all([
      store.claim(claimOf('mixed-a')),
      store.claim(claimOf('mixed-a')),
      store.claim(claimOf('mixed-a', 'other')),
      store.claim(claimOf('mixed-b')),
    ]);
    expect(first.map((c) => c.status)).toEqual(['acquired', 'in_flight', 'mismatch', 'acquired']);
  });

  it('fails only the completion the database refuses; the others of its batch are stored', async () => {
    const keys = ['refuse-1', 'refuse-2', 'refuse-3'];
    const claims = await Promise.all(keys.map((key) => store.claim(claimOf(key))));
    const tokens = claims.map((c) => (c.status === 'acquired' ? c.token : Number.NaN));
    const results = await Promise.allSettled(
      keys.map((key, i) =>
        // 2^40 is no integer column's value: PostgreSQL refuses that row, and with it the statement.
        store.complete(
          key,
          tokens[i] as number,
          { status: i === 1 ? 2 ** 40 : 201, headers: [], body: Buffer.from(key) },
          DAY,
        ),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((await store.claim(claimOf('refuse-1'))).status).toBe('replay');
    expect((await store.claim(claimOf('refuse-2'))).status).toBe('in_flight');
    expect((await store.claim(claimOf('refuse-3'))).status).toBe('replay');
  });

  it('two stores claiming the same 50 keys in opposite orders: one owner each, and no deadlock', async () => {
    const keys = Array.from({ length: 50 }, (_, i) => `both-${i}`);
    const all = await Promise.all([
      ...keys.map((key) => store.claim(claimOf(key))),
      ...[...keys].reverse().map((key) => otherStore.claim(claimOf(key))),
      ...keys.map((key) => otherStore.claim(claimOf(key))),
    ]);
    for (const key of keys) {
      const index = keys.indexOf(key);
      const mine = [all[index], all[50 + (49 - index)], all[100 + index]];
      expect(mine.filter((c) => c?.status === 'acquired')).toHaveLength(1);
      expect(mine.filter((c) => c?.status === 'in_flight')).toHaveLength(2);
    }
  });
});

describe('groupCommit', () => {
  it('keeps at most maxInFlight batches going, and sends what waited together', async () => {
    const batches: string[][] = [];
    let inFlight = 0;
    let most = 0;
    const run = groupCommit(
      async (items: string[]) => {
        batches.push(items);
        most = Math.max(most, ++inFlight);
        await new Promise((r) => setTimeout(r, 20));
        inFlight--;
        return items.map((item) => item.toUpperCase());
      },
      { maxBatch: 100, maxInFlight: 1, keyOf: (item) => item },
    );
    const first = run('a');
    await new Promise((r) => setImmediate(r));
    const later = ['d', 'c', 'b', 'c'].map((item) => run(item));
    expect(await Promise.all([first, ...later])).toEqual(['A', 'D', 'C', 'B', 'C']);
    expect(most).toBe(1);
    // Sorted, each key once per batch: the second 'c' waits for a batch of its own.
    expect(batches).toEqual([['a'], ['b', 'c', 'd'], ['c']]);
  });
});
