/**
 * Shared pieces of the PostgreSQL integration tests: per-run table names on the shared server,
 * and child app servers (`server.js`) the tests can stop, freeze and kill.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type pg from 'pg';
import { migratePostgres } from '../../src/stores/postgres.js';

/** The shared test server: trust auth, database `test`. Tests only create and drop their own tables there. */
export const SHARED = { host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' } as const;

/** The tables one test file owns: idempo's records, its migrations bookkeeping, and a log of handler runs. */
export interface TestTables {
  table: string;
  migrationsTable: string;
  runsTable: string;
}

/** Fresh table names for one test file. */
export function testTables(prefix: string): TestTables {
  const id = randomUUID().replaceAll('-', '').slice(0, 12);
  return { table: `${prefix}_${id}`, migrationsTable: `${prefix}_${id}_mig`, runsTable: `${prefix}_${id}_runs` };
}

/** Migrates the records table and creates the runs log. */
export async function createTables(pool: pg.Pool, tables: TestTables): Promise<void> {
  await migratePostgres(pool, { table: tables.table, migrationsTable: tables.migrationsTable });
  await pool.query(
    `CREATE TABLE "${tables.runsTable}" (key text NOT NULL, server text NOT NULL, pid integer NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`,
  );
}

/** Drops everything {@link createTables} made. */
export async function dropTables(pool: pg.Pool, tables: TestTables): Promise<void> {
  for (const name of [tables.table, tables.migrationsTable, tables.runsTable]) {
    await pool.query(`DROP TABLE IF EXISTS "${name}"`);
  }
}

/** How many times each key's handler ran, from the runs log. */
export async function runCounts(pool: pg.Pool, tables: TestTables): Promise<Map<string, string[]>> {
  const { rows } = await pool.query(`SELECT key, server FROM "${tables.runsTable}" ORDER BY at`);
  const runs = new Map<string, string[]>();
  for (const row of rows) runs.set(row.key, [...(runs.get(row.key) ?? []), row.server]);
  return runs;
}

/** What a child app server reports. */
export interface ServerEvent {
  type: string;
  key?: string;
  status?: number;
  reason?: string;
}

/** A child app server process. */
export interface AppServer {
  readonly name: string;
  readonly url: string;
  readonly child: ChildProcess;
  /** idempo events it reported, in order. */
  readonly events: ServerEvent[];
  /** Keys whose handler it started, in order. */
  readonly ran: string[];
  /** Resolves once `predicate` holds for what the server reported (checked on every message). */
  until(predicate: () => boolean, timeoutMs?: number): Promise<void>;
  /** Asks the server to shut down cleanly; kills it if it has not exited in 5 s. */
  stop(): Promise<void>;
}

/** Options of {@link startServer}; passed to `server.js`. */
export interface AppServerConfig extends TestTables {
  name: string;
  connection: { host: string; port: number; user: string; database: string };
  lease?: number | string;
  ttl?: number | string;
  concurrent?: 'reject' | 'wait';
  waitTimeout?: number | string;
}

const SCRIPT = fileURLToPath(new URL('./server.js', import.meta.url));

/** Forks `server.js` and resolves once it listens. */
export function startServer(config: AppServerConfig): Promise<AppServer> {
  const child = fork(SCRIPT, [], {
    env: { ...process.env, IDEMPO_TEST_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const events: ServerEvent[] = [];
  const ran: string[] = [];
  const watchers = new Set<() => void>();
  let exited = false;
  child.on('exit', () => {
    exited = true;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`server ${config.name} did not start`));
    }, 15_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`server ${config.name} exited with ${code} before listening`));
    });
    child.on('message', (message: { type: string; port?: number; key?: string; event?: ServerEvent }) => {
      if (message.type === 'event' && message.event) events.push(message.event);
      if (message.type === 'ran' && message.key) ran.push(message.key);
      for (const watch of [...watchers]) watch();
      if (message.type !== 'listening') return;
      clearTimeout(timer);
      resolve({
        name: config.name,
        url: `http://127.0.0.1:${message.port}`,
        child,
        events,
        ran,
        until(predicate, timeoutMs = 10_000) {
          if (predicate()) return Promise.resolve();
          return new Promise<void>((done, fail) => {
            const giveUp = setTimeout(() => {
              watchers.delete(watch);
              fail(new Error(`server ${config.name}: condition not met in ${timeoutMs} ms`));
            }, timeoutMs);
            function watch(): void {
              if (!predicate()) return;
              clearTimeout(giveUp);
              watchers.delete(watch);
              done();
            }
            watchers.add(watch);
          });
        },
        async stop() {
          if (exited) return;
          const gone = new Promise<void>((done) => child.once('exit', () => done()));
          child.kill('SIGCONT');
          if (child.connected) child.send('stop');
          const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
          await gone;
          clearTimeout(timer);
        },
      });
    });
  });
}

/** A keyed POST to an app server; its handler waits `delayMs` before it answers. */
export async function post(
  server: AppServer,
  key: string,
  delayMs = 0,
): Promise<{ status: number; replayed: boolean; body: string }> {
  const response = await fetch(`${server.url}/pay`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json', 'x-delay': String(delayMs) },
    body: '{"amount":100}',
  });
  return {
    status: response.status,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    body: await response.text(),
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
