/**
 * The shared store contract through the encrypting wrapper on the networked stores: Redis and
 * PostgreSQL on the shared test servers (memory and SQLite run in src/stores/encrypted.test.ts).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import pg from 'pg';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { storeContractCases } from '../../src/stores/contract.js';
import { type EncryptedStore, encryptStore } from '../../src/stores/encrypted.js';
import { createPostgresStore, type PostgresStore } from '../../src/stores/postgres.js';
import { createRedisStore } from '../../src/stores/redis.js';

const OPTIONS = {
  keys: { k1: randomBytes(32), k2: randomBytes(32) },
  currentKeyId: 'k2',
  fingerprintKey: randomBytes(32),
};

describe('encrypted store over Redis: shared contract', () => {
  const prefix = `idempo-enc-${randomUUID()}:`;
  let client: Redis;
  let other: Redis;
  let store: EncryptedStore;
  let otherStore: EncryptedStore;
  beforeAll(async () => {
    client = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
    other = new Redis({ host: '127.0.0.1', port: 6379, lazyConnect: true });
    await client.connect();
    await other.connect();
    store = encryptStore(createRedisStore({ client, prefix }), OPTIONS);
    otherStore = encryptStore(createRedisStore({ client: other, prefix }), OPTIONS);
  });
  afterAll(async () => {
    let cursor = '0';
    do {
      const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length) await client.unlink(...keys);
    } while (cursor !== '0');
    await store.close?.();
    await otherStore.close?.();
    client.disconnect();
    other.disconnect();
  });
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => store, otherStore: () => otherStore }));
});

describe('encrypted store over PostgreSQL: shared contract', () => {
  const suffix = randomUUID().replaceAll('-', '').slice(0, 12);
  const table = `idempo_enc_${suffix}`;
  const migrationsTable = `idempo_enc_migrations_${suffix}`;
  let pool: pg.Pool;
  let inner: PostgresStore;
  let store: EncryptedStore;
  let otherStore: EncryptedStore;
  beforeAll(async () => {
    pool = new pg.Pool({ host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test', max: 10 });
    pool.on('error', () => {});
    inner = createPostgresStore({ pool, table, migrationsTable });
    await inner.migrate();
    store = encryptStore(inner, OPTIONS);
    otherStore = encryptStore(createPostgresStore({ pool, table, migrationsTable }), OPTIONS);
  });
  afterAll(async () => {
    await store.close?.();
    await otherStore.close?.();
    for (const name of [table, migrationsTable]) await pool.query(`DROP TABLE IF EXISTS "${name}"`);
    await pool.end();
  });
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => store, otherStore: () => otherStore }));
});
