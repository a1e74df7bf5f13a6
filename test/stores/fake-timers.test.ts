/**
 * A user's test that fakes the timers (`vi.useFakeTimers()`, `jest.useFakeTimers()`) after
 * importing idempo must still get answers from every store without advancing them: each store
 * gathers the operations of one turn of the event loop and sends them at its check phase, and
 * that phase must not be the faked `setImmediate`.
 */

import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { createIdempotency } from '../../src/engine/engine.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import { createPostgresStore } from '../../src/stores/postgres.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { createSqliteStore } from '../../src/stores/sqlite.js';
import type { IdempotencyStore } from '../../src/vocabulary/index.js';

const dir = mkdtempSync(join(tmpdir(), 'idempo-fake-timers-'));
const suffix = randomUUID().replaceAll('-', '').slice(0, 12);
const redis = new Redis({ host: '127.0.0.1', port: 6379, db: 11 });
const pool = new pg.Pool({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test', max: 2 });
const closers: (() => Promise<unknown>)[] = [];

afterAll(async () => {
  for (const close of closers) await close();
  await pool.query(`DROP TABLE IF EXISTS idempo_faked_${suffix}, idempo_faked_migrations_${suffix}`);
  await pool.end();
  const left = await redis.keys(`faked:${suffix}:*`);
  if (left.length > 0) await redis.del(...left);
  await redis.quit();
  rmSync(dir, { recursive: true, force: true });
});

function post(key: string): Request {
  return new Request('http://idempo.test/pay', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'idempotency-key': key },
    body: '{"amount":100}',
  });
}

const stores: [string, () => Promise<IdempotencyStore>][] = [
  ['memory', async () => createMemoryStore()],
  ['SQLite', async () => createSqliteStore({ path: join(dir, 'faked.db') })],
  ['Redis', async () => createRedisStore({ client: redis, prefix: `faked:${suffix}:` })],
  [
    'PostgreSQL',
    async () => {
      const store = createPostgresStore({
        pool,
        table: `idempo_faked_${suffix}`,
        migrationsTable: `idempo_faked_migrations_${suffix}`,
      });
      await store.migrate();
      return store;
    },
  ],
];

describe('stores under a test that fakes the timers', () => {
  for (const [name, open] of stores) {
    it(`${name}: a first request runs and its retry replays, without the timers advanced`, async () => {
      const store = await open();
      closers.push(async () => store.close?.());
      const idem = createIdempotency({ store });
      // Connections and statements are ready before the timers stop, as in a test's setup.
      await idem.handle(post(`warm-${randomUUID()}`), async () => new Response('warm'));
      const key = `faked-${randomUUID()}`;
      let runs = 0;
      vi.useFakeTimers();
      try {
        const first = await idem.handle(post(key), async () => new Response(`run ${++runs}`, { status: 201 }));
        const again = await idem.handle(post(key), async () => new Response(`run ${++runs}`, { status: 201 }));
        expect(await first.text()).toBe('run 1');
        expect(again.headers.get('idempotent-replayed')).toBe('true');
        expect(await again.text()).toBe('run 1');
        expect(runs).toBe(1);
      } finally {
        vi.useRealTimers();
      }
    }, 10_000);
  }
});
