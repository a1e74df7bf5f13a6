/**
 * Where the benchmark's networked stores live and how it keeps to its own corner of them: one
 * Redis database index with every key under `ibench:`, and PostgreSQL tables named `ibench_*`.
 * Nothing here touches any other key or table.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const REDIS_URL = process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379/11';
export const PG_URL = process.env.BENCH_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

/** Every Redis key any variant writes starts with this (idempotency keys included, for peers that store them raw). */
export const KEY_PREFIX = 'ibench:';
export const IDEMPO_REDIS_PREFIX = `${KEY_PREFIX}idempo:`;
export const PG_TABLE = 'ibench_idempo_keys';
export const PG_MIGRATIONS_TABLE = 'ibench_idempo_migrations';

export function sqlitePath(runId) {
  return join(tmpdir(), `idempo-bench-${process.pid}-${runId}.db`);
}

export function redisOptions() {
  const url = new URL(REDIS_URL);
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    db: Number(url.pathname.slice(1) || 0),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
  };
}
