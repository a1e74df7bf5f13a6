/**
 * What a store costs as it fills: p50/p99 latency of a fresh claim + completion and of a replay,
 * and the memory (or disk) the records take, at 10k, 100k and 1M completed keys per store.
 *
 *   node bench/keys-curve.js                          # every store, 10k → 1M keys (after `npm run build`)
 *   node bench/keys-curve.js --stores sqlite,redis --sizes 10000,100000 --samples 2000
 *
 * The store is driven directly, in this process, without HTTP: the figures are the store's own.
 * Records are made through the store API for the first key; the rest are copies of that real
 * record (SQL `INSERT … SELECT` for SQLite and PostgreSQL, `DUMP`/`RESTORE` for Redis), so
 * filling 1M keys takes seconds, not an hour of claims. The memory store is filled through its
 * API. Redis uses database 11 under `ibench:curve:`, PostgreSQL the table `ibench_curve`; both
 * are emptied before and after. Resident memory: for the memory store, this process's RSS after a
 * collection; for Redis, `used_memory`; for SQLite and PostgreSQL, the file or relation size.
 */
import { rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseToolArgs } from './lib/cli.js';
import { PG_URL, redisOptions } from './lib/env.js';
import { emptyRedis } from './lib/stores.js';

const { values: args } = parseToolArgs(import.meta.url, {
  options: {
    stores: { type: 'string', default: 'memory,sqlite,redis,postgres' },
    sizes: { type: 'string', default: '10000,100000,1000000' },
    samples: { type: 'string', default: '2000', number: 'count' },
    concurrency: { type: 'string', default: '1', number: 'count' },
  },
});
const sizes = args.sizes.split(',').map(Number);
const { samples, concurrency } = args;
const TTL = 86_400_000;
const LEASE = 30_000;
const FINGERPRINT = 'f'.repeat(64);
const RESPONSE = {
  status: 201,
  headers: [['content-type', 'application/json; charset=utf-8']],
  body: Buffer.from('{"id":"pay_1a2b3c","amount":1999,"currency":"usd","status":"succeeded"}'),
};
const REDIS_PREFIX = 'ibench:curve:';
const PG_CURVE_TABLE = 'ibench_curve';

async function openStore(name) {
  switch (name) {
    case 'memory': {
      const { createMemoryStore } = await import('idempo/memory');
      const store = createMemoryStore({ maxEntries: 2 * Math.max(...sizes) });
      return {
        store,
        fill: (from, to) => fillThroughApi(store, from, to),
        size: () => {
          globalThis.gc?.();
          return process.memoryUsage().rss;
        },
        close: () => store.close(),
      };
    }
    case 'sqlite': {
      const { createSqliteStore } = await import('idempo/sqlite');
      const { default: Database } = await import('better-sqlite3');
      const path = join(tmpdir(), `idempo-curve-${process.pid}.db`);
      const store = createSqliteStore({ path, sweepInterval: false });
      const db = new Database(path);
      await completeOne(store, 'template');
      return {
        store,
        fill: async (from, to) => {
          db.prepare(
            `WITH RECURSIVE n(i) AS (SELECT CAST(? AS INTEGER) UNION ALL SELECT i + 1 FROM n WHERE i < ?)
             INSERT INTO idempo_records SELECT 'fill-' || n.i, fingerprint, state, token, lease_until, expires_at, steps, status, headers, body
             FROM idempo_records, n WHERE key = 'template'`,
          ).run(from, to - 1);
          db.pragma('wal_checkpoint(TRUNCATE)');
        },
        size: () => statSync(path).size + statSync(`${path}-wal`, { throwIfNoEntry: false })?.size,
        close: async () => {
          db.close();
          await store.close();
          for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
        },
      };
    }
    case 'redis': {
      const { Redis } = await import('ioredis');
      const { createRedisStore } = await import('idempo/redis');
      const client = new Redis({ ...redisOptions(), maxRetriesPerRequest: 1 });
      await emptyRedis(client, REDIS_PREFIX);
      const store = createRedisStore({ client, prefix: REDIS_PREFIX });
      await completeOne(store, 'template');
      const dump = await client.dumpBuffer(`${REDIS_PREFIX}{template}`);
      if (!dump) throw new Error('keys-curve: the template record is not where the Redis store keeps records');
      const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1]);
      const baseline = await usedMemory();
      return {
        store,
        fill: async (from, to) => {
          for (let i = from; i < to; i += 5000) {
            const pipeline = client.pipeline();
            for (let j = i; j < Math.min(to, i + 5000); j++) pipeline.restore(`${REDIS_PREFIX}{fill-${j}}`, TTL, dump);
            await pipeline.exec();
          }
        },
        size: async () => (await usedMemory()) - baseline,
        close: async () => {
          await store.close?.();
          await emptyRedis(client, REDIS_PREFIX);
          client.disconnect();
        },
      };
    }
    case 'postgres': {
      const { default: pg } = await import('pg');
      const { createPostgresStore } = await import('idempo/postgres');
      const pool = new pg.Pool({ connectionString: PG_URL, max: 4 });
      await pool.query(`DROP TABLE IF EXISTS ${PG_CURVE_TABLE}`);
      const store = createPostgresStore({
        pool,
        table: PG_CURVE_TABLE,
        migrationsTable: `${PG_CURVE_TABLE}_migrations`,
        sweepInterval: false,
      });
      await store.migrate();
      await completeOne(store, 'template');
      return {
        store,
        fill: async (from, to) => {
          await pool.query(
            `INSERT INTO ${PG_CURVE_TABLE} SELECT 'fill-' || g, (r).fingerprint, (r).state, (r).token, (r).claim_id,
               (r).recovered, (r).lease_until, (r).expires_at, (r).steps, (r).status, (r).headers, (r).body, (r).updated_at
             FROM (SELECT t AS r FROM ${PG_CURVE_TABLE} t WHERE key = 'template') AS x, generate_series($1::int, $2::int) g`,
            [from, to - 1],
          );
          await pool.query(`VACUUM ANALYZE ${PG_CURVE_TABLE}`);
        },
        size: async () =>
          Number((await pool.query(`SELECT pg_total_relation_size('${PG_CURVE_TABLE}') AS n`)).rows[0].n),
        close: async () => {
          await store.close();
          await pool.query(`DROP TABLE IF EXISTS ${PG_CURVE_TABLE}, ${PG_CURVE_TABLE}_migrations`);
          await pool.end();
        },
      };
    }
    default:
      throw new Error(`keys-curve: unknown store ${name}`);
  }
}

/**
 * The response a key completes with: a body of its own, made as a handler's is, a few bytes cut
 * from Node's shared buffer pool, so that the memory store's figure counts what holding such a
 * body costs (one shared Buffer for every record would not).
 */
function responseFor(key) {
  return { ...RESPONSE, body: Buffer.from(`{"id":"pay_${key}","amount":1999,"currency":"usd","status":"succeeded"}`) };
}

async function completeOne(store, key) {
  const claim = await store.claim({ key, fingerprint: FINGERPRINT, leaseMs: LEASE, ttlMs: TTL });
  if (claim.status !== 'acquired') throw new Error(`keys-curve: expected to acquire ${key}, got ${claim.status}`);
  if ((await store.complete(key, claim.token, responseFor(key), TTL)) !== 'ok')
    throw new Error(`keys-curve: ${key} not completed`);
}

async function fillThroughApi(store, from, to) {
  let next = from;
  const worker = async () => {
    while (next < to) await completeOne(store, `fill-${next++}`);
  };
  await Promise.all(Array.from({ length: 64 }, worker));
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))];
}

/** Latencies in µs of `samples` operations, `concurrency` at a time. */
async function measure(operation) {
  const times = [];
  let i = 0;
  const worker = async () => {
    while (i < samples) {
      const n = i++;
      const start = process.hrtime.bigint();
      await operation(n);
      times.push(Number(process.hrtime.bigint() - start) / 1000);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99) };
}

const mb = (bytes) => (bytes / 1024 / 1024).toFixed(1);
const us = (value) => value.toFixed(0);
const rows = [];
for (const name of args.stores.split(',')) {
  const opened = await openStore(name);
  let filled = 0;
  let round = 0;
  try {
    for (const size of sizes) {
      await opened.fill(filled, size);
      filled = size;
      const fresh = await measure((n) => completeOne(opened.store, `fresh-${round}-${n}`));
      const replay = await measure(async (n) => {
        const claim = await opened.store.claim({
          key: `fill-${(n * 7919) % size}`,
          fingerprint: FINGERPRINT,
          leaseMs: LEASE,
          ttlMs: TTL,
        });
        if (claim.status !== 'replay') throw new Error(`keys-curve: expected a replay, got ${claim.status}`);
      });
      round++;
      const bytes = await opened.size();
      const row = { store: name, keys: size, fresh, replay, bytes };
      rows.push(row);
      process.stderr.write(
        `${name.padEnd(8)} ${String(size).padStart(8)} keys  fresh p50 ${us(fresh.p50)} p99 ${us(fresh.p99)} µs  replay p50 ${us(replay.p50)} p99 ${us(replay.p99)} µs  ${mb(bytes)} MiB\n`,
      );
    }
  } finally {
    await opened.close();
  }
}

process.stdout.write(
  `| store | keys | fresh claim + complete p50 / p99 µs | replay p50 / p99 µs | memory or disk, MiB |\n|---|--:|--:|--:|--:|\n`,
);
for (const r of rows) {
  process.stdout.write(
    `| ${r.store} | ${r.keys.toLocaleString('en-US')} | ${us(r.fresh.p50)} / ${us(r.fresh.p99)} | ${us(r.replay.p50)} / ${us(r.replay.p99)} | ${mb(r.bytes)} |\n`,
  );
}
