/**
 * Shared pieces of the ctx.transaction process tests: the databases (a PostgreSQL schema of
 * per-run tables on the shared server, or a SQLite file in a temporary folder), and child apps
 * (`app.js`) that stop at a named point so the tests can kill or freeze them there.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import pg from 'pg';
import { migratePostgres } from '../../src/stores/postgres.js';

const SCRIPT = fileURLToPath(new URL('./app.js', import.meta.url));
const SHARED = { host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' } as const;

/** One order row, as the app's table holds it. */
export interface OrderRow {
  id: number;
  order_key: string;
  server: string;
}

/** The database an app runs on, from the test's side. */
export interface TestDatabase {
  readonly kind: 'postgres' | 'sqlite';
  /** What app.js needs to reach it. */
  readonly config: Record<string, unknown>;
  /** The committed order rows for `key`. */
  orders(key: string): Promise<OrderRow[]>;
  /** Whether `key`'s record is in flight with its lease passed, by the store's clock. */
  leasePassed(key: string): Promise<boolean>;
  close(): Promise<void>;
}

/** Fresh PostgreSQL tables: idempo's records (migrated) and the app's orders, with no unique constraint. */
export async function postgresDatabase(): Promise<TestDatabase> {
  const id = randomUUID().replaceAll('-', '').slice(0, 12);
  const names = {
    table: `idempo_txp_${id}`,
    migrationsTable: `idempo_txp_${id}_mig`,
    orders: `idempo_txp_${id}_orders`,
  };
  const pool = new pg.Pool({ ...SHARED, max: 2 });
  pool.on('error', () => {});
  await migratePostgres(pool, { table: names.table, migrationsTable: names.migrationsTable });
  await pool.query(
    `CREATE TABLE "${names.orders}" (id bigserial PRIMARY KEY, order_key text NOT NULL, server text NOT NULL, amount integer)`,
  );
  return {
    kind: 'postgres',
    config: { kind: 'postgres', connection: SHARED, ...names },
    async orders(key) {
      const { rows } = await pool.query(
        `SELECT id::int AS id, order_key, server FROM "${names.orders}" WHERE order_key = $1 ORDER BY id`,
        [key],
      );
      return rows as OrderRow[];
    },
    async leasePassed() {
      const { rows } = await pool.query(
        `SELECT lease_until < clock_timestamp() AS passed FROM "${names.table}" WHERE state = 'in_flight'`,
      );
      return rows.length === 1 && rows[0].passed === true;
    },
    async close() {
      for (const name of Object.values(names)) await pool.query(`DROP TABLE IF EXISTS "${name}"`);
      await pool.end();
    },
  };
}

/** A fresh SQLite file in a temporary folder; the apps create their tables in it. */
export function sqliteDatabase(): TestDatabase {
  const dir = mkdtempSync(join(tmpdir(), 'idempo-tx-'));
  const path = join(dir, 'shop.db');
  let db: Database.Database | undefined;
  const open = () => {
    db ??= new Database(path, { readonly: true, fileMustExist: true });
    return db;
  };
  return {
    kind: 'sqlite',
    config: { kind: 'sqlite', path },
    async orders(key) {
      return open()
        .prepare('SELECT id, order_key, server FROM orders WHERE order_key = ? ORDER BY id')
        .all(key) as OrderRow[];
    },
    async leasePassed() {
      const rows = open().prepare('SELECT lease_until FROM idempo_records WHERE state = 0').all() as {
        lease_until: number;
      }[];
      return rows.length === 1 && (rows[0] as { lease_until: number }).lease_until < Date.now();
    },
    async close() {
      db?.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A child app process. */
export interface App {
  readonly url: string;
  readonly child: ChildProcess;
  /** Resolves when the app has written `AT <point>` (it is then blocked there). */
  reached(point: string, timeoutMs?: number): Promise<void>;
  /** Resolves when the process has exited. */
  readonly exited: Promise<void>;
  kill(signal: NodeJS.Signals): void;
}

/** Spawns app.js on `database`, stopping at `point` if given, and resolves once it listens. */
export function startApp(database: TestDatabase, name: string, point?: string, lease = 1_000): Promise<App> {
  const child = spawn(process.execPath, [SCRIPT], {
    env: { ...process.env, IDEMPO_TX_CONFIG: JSON.stringify({ ...database.config, name, point, lease }) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines: string[] = [];
  const watchers = new Set<() => void>();
  let buffered = '';
  child.stdout?.setEncoding('utf8');
  child.stdout?.on('data', (chunk: string) => {
    buffered += chunk;
    let newline = buffered.indexOf('\n');
    while (newline >= 0) {
      lines.push(buffered.slice(0, newline));
      buffered = buffered.slice(newline + 1);
      newline = buffered.indexOf('\n');
    }
    for (const watch of [...watchers]) watch();
  });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const waitFor = (predicate: (line: string) => boolean, what: string, timeoutMs: number) =>
    new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => {
        watchers.delete(check);
        reject(new Error(`app ${name}: no "${what}" in ${timeoutMs} ms (got ${JSON.stringify(lines)})`));
      }, timeoutMs);
      function check(): void {
        const line = lines.find(predicate);
        if (line === undefined) return;
        clearTimeout(timer);
        watchers.delete(check);
        resolve(line);
      }
      watchers.add(check);
      check();
    });
  return waitFor((line) => line.startsWith('LISTENING '), 'LISTENING', 15_000).then(
    (line) => ({
      url: `http://127.0.0.1:${line.split(' ')[1]}`,
      child,
      exited,
      reached: async (where, timeoutMs = 10_000) => {
        await waitFor((l) => l === `AT ${where}`, `AT ${where}`, timeoutMs);
      },
      kill: (signal) => {
        child.kill(signal);
      },
    }),
    (error: unknown) => {
      child.kill('SIGKILL');
      throw error;
    },
  );
}

/** A keyed order POST. */
export async function order(
  app: App,
  key: string,
): Promise<{ status: number; replayed: boolean; body: string; json: Record<string, unknown> }> {
  const response = await fetch(`${app.url}/orders`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: JSON.stringify({ amount: 1200 }),
  });
  const body = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(body);
  } catch {}
  return { status: response.status, replayed: response.headers.get('idempotent-replayed') === 'true', body, json };
}

/** POSTs `key` to `app` until it is no longer `409` (a lease still live), for up to `timeoutMs`. */
export async function orderUntilDone(app: App, key: string, timeoutMs = 10_000): ReturnType<typeof order> {
  const giveUpAt = Date.now() + timeoutMs;
  for (;;) {
    const result = await order(app, key);
    if (result.status !== 409 || Date.now() > giveUpAt) return result;
    await new Promise((done) => setTimeout(done, 200));
  }
}
