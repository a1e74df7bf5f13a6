/**
 * idempo's stores as the benchmarked servers open them, plus the harness's side: emptying a
 * store between runs, and reading Redis's command counters.
 */
import { rmSync } from 'node:fs';
import { counters, PAYMENTS_TABLE } from './app.js';
import {
  IDEMPO_REDIS_PREFIX,
  KEY_PREFIX,
  PG_MIGRATIONS_TABLE,
  PG_TABLE,
  PG_URL,
  REDIS_URL,
  redisOptions,
  sqlitePath,
} from './env.js';

/**
 * Opens an idempo store by name inside a server process. Returns `{ store, close }`. `pgPool`: a
 * pool the PostgreSQL store shares with the application (closed by its owner, not here).
 */
export async function openIdempoStore(name, runId, { autoPipelining = false, redisClient = 'ioredis', pgPool } = {}) {
  switch (name) {
    case 'memory': {
      const { createMemoryStore } = await import('idempo/memory');
      const store = createMemoryStore();
      return { store, close: () => store.close() };
    }
    case 'keeps-nothing': {
      // A diagnostic store: acquires every key at once, synchronously like the memory store, and
      // keeps nothing, so a run shows what idempo costs without a store that holds records.
      const acquired = () => ({ status: 'acquired', token: 1, steps: {}, recovered: false });
      const ok = async () => 'ok';
      const store = { claim: async () => acquired(), complete: ok, release: ok, renew: ok, saveStep: ok };
      Object.defineProperty(store, 'sync', { value: { store, claim: acquired, complete: () => 'ok' } });
      return { store, close: async () => {} };
    }
    case 'sqlite': {
      const { createSqliteStore } = await import('idempo/sqlite');
      const path = sqlitePath(runId);
      const store = createSqliteStore({ path });
      return {
        store,
        close: async () => {
          await store.close();
          for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
        },
      };
    }
    case 'redis': {
      if (redisClient === 'node-redis') return openNodeRedisStore();
      const { Redis } = await import('ioredis');
      const { createRedisStore } = await import('idempo/redis');
      const client = new Redis({
        ...redisOptions(),
        enableOfflineQueue: true,
        maxRetriesPerRequest: 1,
        // ioredis writes each command to the socket by itself unless asked to batch what one tick
        // sends (node-redis, under the peers, batches by default).
        enableAutoPipelining: autoPipelining,
      });
      await new Promise((resolve, reject) => {
        client.once('ready', resolve);
        client.once('error', reject);
      });
      // Counts what this process sends, whatever else the shared server is doing: every ioredis
      // command, scripts included, goes through sendCommand, and each is one round trip.
      const sendCommand = client.sendCommand;
      client.sendCommand = function countedSendCommand(...args) {
        counters.redisCommands++;
        return sendCommand.apply(this, args);
      };
      const store = createRedisStore({ client, prefix: IDEMPO_REDIS_PREFIX });
      return {
        store,
        close: async () => {
          await store.close?.();
          client.disconnect();
        },
      };
    }
    case 'postgres': {
      const { default: pg } = await import('pg');
      const { createPostgresStore } = await import('idempo/postgres');
      const pool = pgPool ?? new pg.Pool({ connectionString: PG_URL, max: 10 });
      const store = createPostgresStore({ pool, table: PG_TABLE, migrationsTable: PG_MIGRATIONS_TABLE });
      return {
        store,
        close: async () => {
          await store.close();
          if (!pgPool) await pool.end();
        },
      };
    }
    default:
      throw new Error(`unknown store ${name}`);
  }
}

/**
 * The Redis store on a node-redis client (`@redis/client`), as docs/stores/redis.md sets one up;
 * node-redis writes one turn's commands at once by itself. The store sends through views of the
 * client (`withTypeMapping`), so this process's round trips are not counted here; Redis's own
 * command counts still are.
 */
async function openNodeRedisStore() {
  const { createClient } = await import('@redis/client');
  const { createRedisStore } = await import('idempo/redis');
  const client = createClient({ url: REDIS_URL });
  await client.connect();
  const store = createRedisStore({ client, prefix: IDEMPO_REDIS_PREFIX });
  return {
    store,
    close: async () => {
      await store.close?.();
      client.destroy();
    },
  };
}

/** A short-lived ioredis client for the harness (emptying, INFO). */
export async function harnessRedis() {
  const { Redis } = await import('ioredis');
  const client = new Redis({
    ...redisOptions(),
    lazyConnect: true,
    maxRetriesPerRequest: 1,
    retryStrategy: () => null,
  });
  await client.connect();
  return client;
}

/**
 * Deletes every key under `prefix` (the benchmark's, unless another is given) in the client's
 * database index, and nothing else; returns how many it deleted.
 */
export async function emptyRedis(client, prefix = KEY_PREFIX) {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 5000);
    cursor = next;
    if (keys.length > 0) deleted += await client.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

/**
 * `INFO commandstats` as `{ command: calls }`, plus Redis's own CPU time so far (`INFO cpu`, user
 * + system, in µs) under the key `cpuUs`.
 */
export async function redisCommandCalls(client) {
  const text = await client.info('commandstats');
  const cpu = await client.info('cpu');
  const calls = {};
  for (const line of text.split('\n')) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line.trim());
    if (match) calls[match[1]] = Number(match[2]);
  }
  let cpuUs = 0;
  for (const line of cpu.split('\n')) {
    const match = /^used_cpu_(?:user|sys):([\d.]+)/.exec(line.trim());
    if (match) cpuUs += Number(match[1]) * 1e6;
  }
  return { calls, cpuUs };
}

const HARNESS_COMMANDS = new Set(['info', 'scan', 'unlink', 'select', 'ping', 'client|setname', 'client|info']);
const SCRIPT_COMMANDS = new Set(['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall', 'fcall_ro']);

/**
 * Commands Redis ran per request between two `redisCommandCalls` snapshots, and Redis's CPU time
 * per request. Redis counts the commands a Lua script calls as well as the script itself, and
 * cannot tell a plain SET from one a script ran, so only for a client that sends no scripts (the
 * peers) are all commands its round trips; `scripts` says how many script calls there were.
 */
export function commandsPerRequest(before, after, requests) {
  const perCommand = {};
  let all = 0;
  let scripts = 0;
  for (const [name, calls] of Object.entries(after.calls)) {
    if (HARNESS_COMMANDS.has(name)) continue;
    const delta = calls - (before.calls[name] ?? 0);
    if (delta <= 0) continue;
    perCommand[name] = delta / requests;
    all += delta;
    if (SCRIPT_COMMANDS.has(name)) scripts += delta;
  }
  return {
    commands: all / requests,
    scripts: scripts / requests,
    cpuUsPerReq: (after.cpuUs - before.cpuUs) / requests,
    perCommand,
  };
}

/** Creates (once) and empties the benchmark's PostgreSQL table. */
export async function preparePostgres() {
  const { default: pg } = await import('pg');
  const { createPostgresStore } = await import('idempo/postgres');
  const pool = new pg.Pool({ connectionString: PG_URL, max: 1, connectionTimeoutMillis: 2_000 });
  try {
    const store = createPostgresStore({
      pool,
      table: PG_TABLE,
      migrationsTable: PG_MIGRATIONS_TABLE,
      sweepInterval: false,
    });
    await store.migrate();
    await store.close();
  } finally {
    await pool.end();
  }
}

/** Completed records the emptied table starts with: what a service keeps within a day's ttl. */
export const PG_SEED_RECORDS = 50_000;

/**
 * Empties the benchmark's PostgreSQL tables, then gives idempo's the state of a table in service:
 * `PG_SEED_RECORDS` completed records, and planner statistics that know them.
 *
 * Why not just empty: a table just emptied (or created) has no statistics, so the planner takes
 * it for ten pages until autovacuum analyzes it, up to a minute later. A prepared statement's
 * generic plan made in that window is kept on its connection until then, and for the batched
 * completion (a join on the key) it is a sequential scan: each batch then reads the whole
 * table, which grew by every request since. Measured 2026-12-04 on `fastify-row-idempo-postgres`
 * fresh: 0.37× of bare in the first 2 s slice, 0.16× by the sixth, and `seq_tup_read` at 116
 * million rows. A service meets that only in the first minute of a new table; the benchmark met
 * it in every measured second.
 */
export async function emptyPostgres() {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ connectionString: PG_URL });
  await client.connect();
  try {
    await client.query(
      `CREATE TABLE IF NOT EXISTS ${PAYMENTS_TABLE} (id text PRIMARY KEY, amount integer NOT NULL, currency text NOT NULL)`,
    );
    await client.query(`TRUNCATE ${PG_TABLE}, ${PAYMENTS_TABLE}`);
    await client.query(
      `INSERT INTO ${PG_TABLE} (key, fingerprint, state, token, claim_id, expires_at, status, headers, body, updated_at)
       SELECT 'ibench:seed:' || g, md5(g::text), 'completed', 1, gen_random_uuid(), now() + interval '1 day',
              201, '[["content-type","application/json"]]'::jsonb, convert_to(md5(g::text), 'UTF8'), now()
       FROM generate_series(1, $1::integer) AS g`,
      [PG_SEED_RECORDS],
    );
    await client.query(`ANALYZE ${PG_TABLE}, ${PAYMENTS_TABLE}`);
  } finally {
    await client.end();
  }
}
