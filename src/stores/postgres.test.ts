import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IdempotencyConfigInvalidError, IdempotencyError } from '../vocabulary/index.js';
import { storeContractCases } from './contract.js';
import {
  createPostgresStore,
  IdempotencyStoreNotMigratedError,
  migratePostgres,
  POSTGRES_SCHEMA_VERSION,
  type PostgresStore,
  type PostgresStoreOptions,
} from './postgres.js';

// The shared test server: trust auth, database `test`. Every table this file makes has a per-run suffix and is dropped after.
const CONNECTION = { host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' } as const;
const SUFFIX = randomUUID().replaceAll('-', '').slice(0, 12);
const TABLE = `idempo_test_${SUFFIX}`;
const MIGRATIONS = `idempo_migrations_${SUFFIX}`;
const DAY = 86_400_000;

const pools: pg.Pool[] = [];
const stores: PostgresStore[] = [];
const extraTables: string[] = [];

function newPool(max = 10): pg.Pool {
  const pool = new pg.Pool({ ...CONNECTION, max });
  pool.on('error', () => {});
  pools.push(pool);
  return pool;
}

function newStore(options: Partial<PostgresStoreOptions> = {}): PostgresStore {
  const store = createPostgresStore({
    pool: options.pool ?? primary,
    table: TABLE,
    migrationsTable: MIGRATIONS,
    ...options,
  });
  stores.push(store);
  return store;
}

function freshTable(): string {
  const name = `idempo_t${randomUUID().replaceAll('-', '').slice(0, 16)}`;
  extraTables.push(name);
  return name;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const body = (text: string) => new TextEncoder().encode(text);

let primary: pg.Pool;
let store: PostgresStore;
let other: PostgresStore;

beforeAll(async () => {
  primary = newPool();
  store = newStore();
  other = newStore({ pool: newPool() });
  await store.migrate();
});

afterAll(async () => {
  for (const s of stores) await s.close();
  for (const name of [TABLE, MIGRATIONS, ...extraTables]) await primary.query(`DROP TABLE IF EXISTS "${name}"`);
  for (const pool of pools) await pool.end();
});

describe('postgres store: the shared contract', () => {
  for (const c of storeContractCases) {
    it(c.name, () => c.run({ store: () => store, otherStore: () => other }));
  }
});

describe('postgres store: without prepared statements (for PgBouncer in transaction mode)', () => {
  const unprepared = () => newStore({ preparedStatements: false });
  for (const c of storeContractCases.filter((c) => !/ttl|expired|outlives/.test(c.name))) {
    it(c.name, () => c.run({ store: unprepared }));
  }

  it('sends named statements by default and plain text when asked', async () => {
    const seen: unknown[] = [];
    const spying = {
      query: (text: unknown, values?: unknown[]) => {
        seen.push(text);
        return primary.query(text as string, values);
      },
      connect: () => primary.connect(),
    };
    const named = newStore({ pool: spying as unknown as pg.Pool });
    await named.claim({ key: `named-${randomUUID()}`, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    expect(seen.at(-1)).toMatchObject({
      name: expect.stringMatching(/^idempo_[0-9a-f]{24}$/),
      text: expect.any(String),
    });
    const plain = newStore({ pool: spying as unknown as pg.Pool, preparedStatements: false });
    await plain.claim({ key: `plain-${randomUUID()}`, fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    expect(typeof seen.at(-1)).toBe('string');
  });
});

describe('postgres store: migration', () => {
  it('is versioned and idempotent: a second run applies nothing', async () => {
    const again = await store.migrate();
    expect(again).toEqual({
      table: `public.${TABLE}`,
      from: POSTGRES_SCHEMA_VERSION,
      to: POSTGRES_SCHEMA_VERSION,
      applied: [],
    });
    const { rows } = await primary.query(`SELECT version FROM "${MIGRATIONS}" WHERE table_name = $1`, [
      `public.${TABLE}`,
    ]);
    expect(rows).toEqual([{ version: POSTGRES_SCHEMA_VERSION }]);
  });

  it('is safe when several processes migrate the same fresh table at once', async () => {
    const table = freshTable();
    const migrationsTable = freshTable();
    const racers = Array.from({ length: 4 }, () => newPool(2));
    const results = await Promise.all(
      racers.flatMap((pool) => [1, 2].map(() => migratePostgres(pool, { table, migrationsTable }))),
    );
    expect(results.filter((r) => r.applied.length > 0)).toHaveLength(1);
    for (const r of results) expect(r.to).toBe(POSTGRES_SCHEMA_VERSION);
    const s = newStore({ table, migrationsTable });
    expect((await s.claim({ key: 'k', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })).status).toBe('acquired');
  });

  it('a missing table fails with the coded not-migrated error, and no DDL runs on the request path', async () => {
    const table = freshTable();
    const s = newStore({ table });
    const error = await s.claim({ key: 'k', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotencyStoreNotMigratedError);
    expect(error).toBeInstanceOf(IdempotencyError);
    expect((error as IdempotencyStoreNotMigratedError).code).toBe('IDEMPO_STORE_NOT_MIGRATED');
    expect((error as Error).message).toMatch(/migrate/);
    expect(((error as Error).cause as { code?: string }).code).toBe('42P01');
    await expect(s.complete('k', 1, { status: 200, headers: [], body: body('') }, DAY)).rejects.toBeInstanceOf(
      IdempotencyStoreNotMigratedError,
    );
    const { rows } = await primary.query('SELECT to_regclass($1) AS found', [table]);
    expect(rows[0].found).toBeNull();
  });

  it('autoMigrate creates the table on first use, once, even from concurrent calls', async () => {
    const table = freshTable();
    const s = newStore({ table, autoMigrate: true });
    const results = await Promise.all(
      Array.from({ length: 10 }, () => s.claim({ key: 'k', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })),
    );
    expect(results.filter((r) => r.status === 'acquired')).toHaveLength(1);
  });

  it('rejects table and channel names it cannot quote safely', () => {
    expect(() => createPostgresStore({ pool: primary, table: 'keys; DROP TABLE x' })).toThrow(
      IdempotencyConfigInvalidError,
    );
    expect(() => createPostgresStore({ pool: primary, table: 'a.b.c' })).toThrow(IdempotencyConfigInvalidError);
    expect(() => createPostgresStore({ pool: primary, channel: 'app.changes' })).toThrow(IdempotencyConfigInvalidError);
    expect(() => createPostgresStore({ pool: primary, sweepBatchSize: 0 })).toThrow(IdempotencyConfigInvalidError);
  });
});

describe('postgres store: time, tokens and expiry', () => {
  it('a fresh token is the database clock in ms, and a record never expires before its lease', async () => {
    const key = `t:${randomUUID()}`;
    const claim = await store.claim({ key, fingerprint: 'fp', leaseMs: 5_000, ttlMs: 1_000 });
    expect(claim.status).toBe('acquired');
    const { rows } = await primary.query(
      `SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::text AS now, expires_at >= lease_until AS ordered
       FROM "${TABLE}" WHERE key = $1`,
      [key],
    );
    const token = (claim as { token: number }).token;
    expect(Math.abs(Number(rows[0].now) - token)).toBeLessThan(60_000);
    expect(rows[0].ordered).toBe(true);
  });

  it('an expired row is absent to fenced writes as well as to claims', async () => {
    const key = `t:${randomUUID()}`;
    const claim = await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claim.status !== 'acquired') throw new Error(claim.status);
    // Age the row past both its lease and its expiry, as a worker paused for longer than the ttl would find it.
    await primary.query(
      `UPDATE "${TABLE}" SET lease_until = clock_timestamp() - interval '2 s', expires_at = clock_timestamp() - interval '1 s' WHERE key = $1`,
      [key],
    );
    expect(await store.complete(key, claim.token, { status: 200, headers: [], body: body('late') }, DAY)).toBe('stale');
    const again = await store.claim({ key, fingerprint: 'other', leaseMs: 60_000, ttlMs: DAY });
    expect(again.status).toBe('acquired');
    if (again.status === 'acquired') {
      expect(again.token).toBeGreaterThan(claim.token);
      expect(again.recovered).toBe(false);
    }
  });

  it('sweep deletes expired rows in bounded batches and never a live in_flight one', async () => {
    const table = freshTable();
    const s = newStore({ table, sweepBatchSize: 2, sweepInterval: false });
    await s.migrate();
    const expired = Array.from({ length: 5 }, (_, i) => `gone:${i}`);
    for (const key of expired) {
      const c = await s.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: 200 });
      if (c.status !== 'acquired') throw new Error(c.status);
      await s.complete(key, c.token, { status: 200, headers: [], body: body('x') }, 200);
    }
    const released = await s.claim({ key: 'released', fingerprint: 'fp', leaseMs: 60_000, ttlMs: 200 });
    if (released.status === 'acquired') await s.release('released', released.token, 200);
    await s.claim({ key: 'live', fingerprint: 'fp', leaseMs: 60_000, ttlMs: 200 });
    await s.claim({ key: 'kept', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    await sleep(400);
    expect(await s.sweep()).toBe(6);
    const { rows } = await primary.query(`SELECT key FROM "${table}" ORDER BY key`);
    expect(rows.map((r) => r.key)).toEqual(['kept', 'live']);
    expect(await s.sweep()).toBe(0);
  });

  it('the sweep timer runs on its own and reports failures through onBackgroundError', async () => {
    const errors: unknown[] = [];
    const missing = newStore({ table: freshTable(), sweepInterval: 50, onBackgroundError: (e) => errors.push(e) });
    const table = freshTable();
    const s = newStore({ table, sweepInterval: 50 });
    await s.migrate();
    const c = await s.claim({ key: 'k', fingerprint: 'fp', leaseMs: 100, ttlMs: 100 });
    if (c.status === 'acquired') await s.complete('k', c.token, { status: 200, headers: [], body: body('') }, 100);
    await expect
      .poll(async () => (await primary.query(`SELECT 1 FROM "${table}"`)).rowCount, { timeout: 3_000 })
      .toBe(0);
    await expect.poll(() => errors.length, { timeout: 3_000 }).toBeGreaterThan(0);
    expect(errors[0]).toBeInstanceOf(IdempotencyStoreNotMigratedError);
    await missing.close();
  });
});

describe('postgres store: waiting with LISTEN/NOTIFY', () => {
  it('wakes a waiter on release, from another pool', async () => {
    const key = `w:${randomUUID()}`;
    const claim = await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claim.status !== 'acquired') throw new Error(claim.status);
    const started = Date.now();
    const waiting = other.waitForChange(key, 10_000);
    await sleep(100);
    expect(await store.release(key, claim.token, DAY)).toBe('ok');
    await waiting;
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('returns at once when the key already changed before the wait began', async () => {
    const key = `w:${randomUUID()}`;
    const claim = await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claim.status !== 'acquired') throw new Error(claim.status);
    await store.complete(key, claim.token, { status: 200, headers: [], body: body('') }, DAY);
    const started = Date.now();
    await store.waitForChange(key, 10_000);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it('times out when nothing changes', async () => {
    const key = `w:${randomUUID()}`;
    await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    const started = Date.now();
    await store.waitForChange(key, 300);
    expect(Date.now() - started).toBeGreaterThanOrEqual(250);
  });

  it('uses one client for LISTEN, survives losing it, and gives it back on close', async () => {
    const pool = newPool(4);
    const errors: unknown[] = [];
    const channel = `idempo_listen_${SUFFIX}`;
    const s = newStore({ pool, channel, onBackgroundError: (e) => errors.push(e) });
    const key = `w:${randomUUID()}`;
    const claim = await s.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claim.status !== 'acquired') throw new Error(claim.status);

    const first = s.waitForChange(key, 20_000);
    await expect.poll(() => pool.totalCount - pool.idleCount).toBe(1);
    const { rows } = await primary.query(
      `SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = $1 AND pid <> pg_backend_pid()`,
      [`LISTEN "${channel}"`],
    );
    expect(rows).toHaveLength(1);
    for (const row of rows) await primary.query('SELECT pg_terminate_backend($1)', [row.pid]);
    const started = Date.now();
    await first;
    expect(Date.now() - started).toBeLessThan(10_000);
    await expect.poll(() => errors.length).toBeGreaterThan(0);

    const second = s.waitForChange(key, 20_000);
    await sleep(200);
    expect(await s.complete(key, claim.token, { status: 200, headers: [], body: body('') }, DAY)).toBe('ok');
    await second;
    expect(Date.now() - started).toBeLessThan(15_000);

    await s.close();
    expect(pool.totalCount - pool.idleCount).toBe(0);
    await s.waitForChange(key, 10_000); // closed: returns at once
  });

  it('falls back to polling when no LISTEN connection can be had', async () => {
    const key = `w:${randomUUID()}`;
    // A real pool whose connect() is refused, as behind a transaction-mode pooler that cannot LISTEN.
    const noListen = { query: primary.query.bind(primary), connect: () => Promise.reject(new Error('no LISTEN here')) };
    const errors: unknown[] = [];
    const s = newStore({ pool: noListen, pollInterval: 100, onBackgroundError: (e) => errors.push(e) });
    const claim = await s.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claim.status !== 'acquired') throw new Error(claim.status);
    const started = Date.now();
    const waiting = s.waitForChange(key, 20_000);
    await sleep(300);
    await s.complete(key, claim.token, { status: 200, headers: [], body: body('') }, DAY);
    await waiting;
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(errors).toHaveLength(1);
  });

  it('stops polling once a wait has timed out', async () => {
    let queries = 0;
    const counting = {
      query: (text: string, values?: unknown[]) => {
        queries++;
        return primary.query(text, values);
      },
      connect: () => Promise.reject(new Error('no LISTEN here')),
    };
    const s = newStore({ pool: counting, pollInterval: 50 });
    const key = `w:${randomUUID()}`;
    await s.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    await s.waitForChange(key, 220);
    await sleep(60);
    const after = queries;
    await sleep(300);
    expect(queries).toBe(after);
  });
});
