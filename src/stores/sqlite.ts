/**
 * The embedded, durable store on SQLite (better-sqlite3): survives restarts, and is safe for
 * several processes on one machine sharing one database file (WAL mode; a claim that may take
 * the key is an IMMEDIATE transaction, which takes the database's write lock before it reads;
 * replays and waiting duplicates only read, and never wait for that lock).
 *
 * @module
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import {
  type ClaimInput,
  type ClaimResult,
  type Duration,
  type FencedResult,
  IdempotencyConfigInvalidError,
  IdempotencyDependencyMissingError,
  type IdempotencyStore,
  IdempotencyStoreUnavailableError,
  parseDuration,
  type RecordInfo,
  type RecordState,
  type StoredResponse,
} from '../vocabulary/index.js';
import { asBuffer } from './bytes.js';
import { outlastToken, pageLimit } from './operations.js';
import { isBusy } from './sqlite-busy.js';
import { type Checkpointer, startCheckpointer } from './sqlite-checkpointer.js';
import { groupCommit } from './sqlite-group-commit.js';
import { readBatch } from './sqlite-read-batch.js';
import {
  createSqliteTable,
  migrateSqliteTable,
  SQLITE_SCHEMA_VERSION,
  type SqliteMigrationResult,
  sqliteSchemaVersion,
} from './sqlite-schema.js';
import { createSqliteTransaction, type SqliteApplicationDatabase } from './sqlite-transaction.js';

export type { SqliteMigrationResult } from './sqlite-schema.js';
export type { SqliteApplicationDatabase } from './sqlite-transaction.js';

import { startSweeper } from './sweeper.js';

/** Options of {@link createSqliteStore}. */
export interface SqliteStoreOptions {
  /**
   * The database file; `':memory:'` for a private in-memory database.
   * @default './idempo.db'
   */
  path?: string;
  /**
   * Table name (letters, digits and underscores).
   * @default 'idempo_records'
   */
  table?: string;
  /**
   * How often expired records are deleted (expiry is also checked on every read, so the sweep
   * only reclaims space). `false` turns the timer off: call `store.sweep()` yourself.
   * @default '60s'
   */
  sweepInterval?: Duration | false;
  /**
   * Most rows one sweep statement deletes, so no statement holds the write lock long.
   * @default 500
   */
  sweepBatchSize?: number;
  /**
   * The same as `sweepBatchSize`.
   * @deprecated Use `sweepBatchSize`, named as in the PostgreSQL store.
   */
  sweepBatch?: number;
  /**
   * How long a write waits for another process's lock before failing. The wait is asynchronous:
   * the event loop keeps serving (and renewing leases) meanwhile.
   * @default '5s'
   */
  busyTimeout?: Duration;
  /**
   * The same as `busyTimeout`, in ms.
   * @deprecated Use `busyTimeout`, a duration like the other stores' options.
   */
  busyTimeoutMs?: number;
  /**
   * How often a waiting duplicate re-reads the record, since other processes cannot notify it.
   * @default 50
   */
  pollInterval?: Duration;
  /**
   * SQLite's `synchronous` level, which decides what a commit survives. Either way the database
   * stays consistent, and a commit survives the process being killed.
   * - `'normal'`: a commit is written to the WAL but not flushed to the disk at once, so an
   *   operating-system crash or a power loss can undo the last commits. A lost claim lets a
   *   retry run the operation again; a lost completion sends the key back in flight, to be taken
   *   over after its lease.
   * - `'full'`: every commit is flushed to the disk before it returns (one fsync per group
   *   commit), so no acknowledged claim or completion is lost. It costs the fsync's latency on
   *   every write.
   * @default 'normal'
   */
  synchronous?: 'normal' | 'full';
  /**
   * Where WAL checkpoints (copying committed pages from the `-wal` file into the database file)
   * run.
   * - `'background'`: on a worker thread with its own connection, in passive checkpoints that
   *   neither block nor wait for the store's writes; the store's connection never checkpoints,
   *   so no request pays for one. If the thread fails, the store reports it to
   *   `onBackgroundError` and goes back to `'inline'`.
   * - `'inline'`: SQLite's default, inside the commit that takes the WAL past 1000 pages, on the
   *   event loop.
   *
   * Either way a commit is exactly as durable (see `synchronous`). An in-memory database has no
   * WAL and no checkpoints.
   * @default 'background'
   */
  checkpoint?: 'background' | 'inline';
  /**
   * Called with failures no request sees: a failed sweep, a checkpoint thread that stopped.
   * Must not throw.
   * @default ignores them
   */
  onBackgroundError?: (error: unknown) => void;
  /**
   * Your own better-sqlite3 `Database`, open on the same file as `path`: `ctx.transaction(fn)`
   * runs `fn` on it, in a transaction that also saves idempo's step, so your writes and the
   * record commit together (docs/transactions.md). The store still makes every other write
   * through its own connection, and never closes this one. Without it, `ctx.transaction` rejects
   * with `IDEMPO_TRANSACTION_UNSUPPORTED`.
   * @default undefined
   */
  database?: SqliteApplicationDatabase;
  /**
   * Whether opening a file whose table an earlier version made (clustered by key, which works but
   * writes about twice the bytes per request) emits a Node.js process warning with code
   * `IDEMPO_SQLITE_OLD_LAYOUT`, naming {@link SqliteStore.migrate} and `idempo migrate`; once per
   * file and table in a process. `false` when you tell your users yourself (the gateway logs its
   * own line).
   * @default true
   */
  layoutWarning?: boolean;
}

/** A SQLite store; `sweep()` deletes expired records now and returns how many. */
export interface SqliteStore extends IdempotencyStore {
  /**
   * Deletes expired records in bounded batches; returns the number deleted. Throws SQLITE_BUSY
   * at once if another connection holds the write lock (the store's own timer tries again later).
   */
  sweep(): number;
  /**
   * Moves a table an earlier version made, clustered by key (`WITHOUT ROWID`), to rowid order,
   * which writes about half the bytes per request; every record is kept. A table made by this
   * version has nothing to move. One transaction: other processes' writes wait for it (up to
   * their `busyTimeout`), and this process's event loop waits while it copies the rows; another
   * process's write lock is waited out on timers, up to `busyTimeout`. `idempo migrate --store
   * sqlite:PATH` runs it from the command line.
   *
   * @example
   * ```ts
   * const { from, to } = await store.migrate(); // { from: 1, to: 2 } once, then { from: 2, to: 2 }
   * ```
   */
  migrate(): Promise<SqliteMigrationResult>;
  /**
   * The layout the store's table has in the file now: `2` (rowid order) for a table this version
   * made or moved, `1` for one an earlier version made (clustered by key), which works as well but
   * writes about twice the bytes per request until {@link SqliteStore.migrate} moves it.
   */
  schemaVersion(): number;
  /** Stops the sweep timer and closes the database. */
  close(): Promise<void>;
}

/** Most writes committed in one transaction: about a millisecond of holding the write lock. */
const GROUP_COMMIT_MAX = 128;

/**
 * The checkpoint thread's pace: while writes come, often enough that each checkpoint copies a
 * few hundred pages at most (the WAL stays small and is restarted from its start); when idle,
 * rarely enough to cost nothing.
 */
const CHECKPOINT_BUSY_MS = 10;
const CHECKPOINT_IDLE_MS = 250;

/** WAL pages (16 MiB) past which the store's connection finishes the thread's checkpoint itself. */
const CATCH_UP_PAGES = 4000;

/** SQLite's own default `wal_autocheckpoint`, restored if the thread fails. */
const INLINE_CHECKPOINT_PAGES = 1000;

/**
 * Switches the file to WAL mode (kept in the file: later opens find it so). The switch does not
 * wait on the busy handler: a second process creating the same new file at the same moment gets
 * SQLITE_BUSY at once, so it is tried again here, blocking (this runs once, at start), until the
 * busy timeout.
 */
function useWal(db: Database, busyTimeoutMs: number): void {
  const giveUpAt = Date.now() + busyTimeoutMs;
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (;;) {
    try {
      // Answers the mode it is in: 'wal', or 'memory' for ':memory:', which has no WAL.
      db.pragma('journal_mode = WAL', { simple: true });
      return;
    } catch (error) {
      if (!isBusy(error)) throw error;
    }
    if (Date.now() >= giveUpAt) {
      throw new IdempotencyStoreUnavailableError(
        'The SQLite store could not switch the database to WAL mode: another process kept it locked past busyTimeout.',
      );
    }
    Atomics.wait(pause, 0, 0, 10);
  }
}

// Numeric states keep rows small and comparisons cheap.
const IN_FLIGHT = 0;
const COMPLETED = 1;
const RELEASED = 2;

const STATE_CODES: Record<RecordState, number> = { in_flight: IN_FLIGHT, completed: COMPLETED, released: RELEASED };
const STATE_NAMES: RecordState[] = ['in_flight', 'completed', 'released'];

/** The response a completed row holds. */
function responseOf(row: Found): StoredResponse {
  return {
    status: row.status as number,
    headers: JSON.parse(row.headers ?? '[]') as [string, string][],
    body: row.body ?? new Uint8Array(),
  };
}

/**
 * A row as operations see it. The table has no creation time: a record's first token is its
 * creating clock's time in ms and each takeover adds one, so the token stands for it.
 */
function infoOf(row: Row & { key: string }): RecordInfo {
  const state = STATE_NAMES[row.state] as RecordState;
  return {
    key: row.key,
    state,
    token: row.token,
    createdAt: row.token,
    ...(state === 'in_flight' ? { leaseUntil: row.lease_until } : {}),
    expiresAt: row.expires_at,
    steps: row.steps ? Object.keys(JSON.parse(row.steps) as object) : [],
    ...(state === 'completed' ? { response: responseOf(row) } : {}),
  };
}

/** What a claim reads of a record to answer without writing: a replay, a mismatch, a key in flight. */
interface Found {
  fingerprint: string;
  state: number;
  lease_until: number;
  expires_at: number;
  status: number | null;
  headers: string | null;
  body: Buffer | null;
}

/** A record as the claim that may take its key reads it. */
interface Row extends Found {
  token: number;
  steps: string | null;
}

/*
 * The claim's reads return rows as arrays and make the objects here: on Node 20 better-sqlite3
 * builds a row object in C++ with one property set per column (the column's name made a V8
 * string, the object's shape moved on), which cost a replay more than the rest of the read. A
 * replay's read leaves out the two columns only a take needs: each column a row carries costs
 * about 1.5k instructions (counted with bench/instructions.js).
 */
const FOUND_COLUMNS = 'fingerprint, state, lease_until, expires_at, status, headers, body';
type FoundValues = [string, number, number, number, number | null, string | null, Buffer | null];
type RowValues = [...FoundValues, number, string | null];

function foundOf(values: FoundValues | RowValues | undefined): Found | undefined {
  if (values === undefined) return undefined;
  // Indexed, not destructured: destructuring goes through the array iterator until optimised.
  return {
    fingerprint: values[0],
    state: values[1],
    lease_until: values[2],
    expires_at: values[3],
    status: values[4],
    headers: values[5],
    body: values[6],
  };
}

/** Only a claim that may take the key reads a whole row: rare enough to build it from {@link foundOf}'s. */
function rowOf(values: RowValues | undefined): Row | undefined {
  if (values === undefined) return undefined;
  return { ...(foundOf(values) as Found), token: values[7], steps: values[8] };
}

interface Statement {
  get(...params: unknown[]): unknown;
  all(...params: unknown[]): unknown[];
  run(...params: unknown[]): { changes: number };
  raw(toggle?: boolean): Statement;
}
interface Database {
  pragma(source: string, options?: { simple: boolean }): unknown;
  exec(source: string): unknown;
  prepare(source: string): Statement;
  transaction<T extends (...args: never[]) => unknown>(fn: T): T & { immediate: T };
  close(): void;
  readonly inTransaction: boolean;
}
type DatabaseConstructor = new (path: string) => Database;

const require = createRequire(import.meta.url);

function loadDriver(): DatabaseConstructor {
  try {
    return require('better-sqlite3') as DatabaseConstructor;
  } catch (error) {
    throw new IdempotencyDependencyMissingError(
      'createSqliteStore needs better-sqlite3, which is not installed: run `npm install better-sqlite3`.',
      { cause: error },
    );
  }
}

/** Opens the file; a driver installed without its native build (`--ignore-scripts`) says how to build it. */
function openDatabase(Driver: DatabaseConstructor, path: string): Database {
  try {
    return new Driver(path);
  } catch (error) {
    if (/bindings file|better_sqlite3\.node|NODE_MODULE_VERSION/.test(String((error as Error)?.message))) {
      throw new IdempotencyDependencyMissingError(
        'better-sqlite3 is installed but its native module is not built for this Node.js: run `npm rebuild better-sqlite3`.',
        { cause: error },
      );
    }
    throw error;
  }
}

/**
 * Moves this connection's checkpoints to a thread (sqlite-checkpointer.ts); none for a database
 * without a WAL. If the thread fails, checkpoints come back inline, at SQLite's default size.
 */
function checkpointInBackground(
  db: Database,
  path: string,
  onBackgroundError: ((error: unknown) => void) | undefined,
): Checkpointer | undefined {
  if (db.pragma('journal_mode', { simple: true }) !== 'wal') return undefined;
  // The WAL starts over from its beginning only when a write finds every frame already copied,
  // which a thread copying beside a steady stream of commits rarely sees: past this size the
  // store's own connection copies the few frames the thread has not, so the WAL restarts.
  db.pragma(`wal_autocheckpoint = ${CATCH_UP_PAGES}`);
  return startCheckpointer({
    path,
    driverPath: require.resolve('better-sqlite3'),
    idleMs: CHECKPOINT_IDLE_MS,
    busyMs: CHECKPOINT_BUSY_MS,
    onFailed(error) {
      try {
        db.pragma(`wal_autocheckpoint = ${INLINE_CHECKPOINT_PAGES}`);
      } catch {
        // Closed meanwhile: nothing left to checkpoint for.
      }
      onBackgroundError?.(
        new IdempotencyStoreUnavailableError(
          'The SQLite checkpoint thread stopped; checkpoints run inline again, inside commits.',
          { cause: error },
        ),
      );
    },
  });
}

/** The files (and tables) whose older layout this process has already warned of. */
const WARNED_OF_LAYOUT = new Set<string>();

/**
 * A file made before the rowid layout keeps its table as it was, and nothing on the request path
 * says so: one process warning tells whoever runs it how to get the faster layout.
 */
function warnOfOlderLayout(db: Database, path: string, table: string): void {
  if (sqliteSchemaVersion(db, table) >= SQLITE_SCHEMA_VERSION) return;
  const where = `${path}\0${table}`;
  if (WARNED_OF_LAYOUT.has(where)) return;
  WARNED_OF_LAYOUT.add(where);
  process.emitWarning(
    `idempo: the SQLite table ${table} in ${path} has the layout of an earlier idempo version (clustered by key): it works, but writes about twice the bytes per request. To move it, keeping every record: await store.migrate(), or stop the processes using the file and run idempo migrate --store sqlite:${path}.`,
    { code: 'IDEMPO_SQLITE_OLD_LAYOUT' },
  );
}

/**
 * Creates a SQLite store on a database file, creating its table if needed.
 *
 * @example
 * ```ts
 * import { createSqliteStore } from 'idempo/sqlite';
 * const store = createSqliteStore({ path: './idempo.db' });
 * const idem = createIdempotency({ store });
 * ```
 */
export function createSqliteStore(options: SqliteStoreOptions = {}): SqliteStore {
  const { path = './idempo.db', table = 'idempo_records', sweepInterval = '60s', onBackgroundError } = options;
  const sweepBatchSize = options.sweepBatchSize ?? options.sweepBatch ?? 500;
  if (!Number.isSafeInteger(sweepBatchSize) || sweepBatchSize < 1) {
    throw new IdempotencyConfigInvalidError(
      `sweepBatchSize: expected a positive integer, got ${JSON.stringify(sweepBatchSize)}`,
    );
  }
  const busyTimeoutMs =
    options.busyTimeout === undefined && options.busyTimeoutMs !== undefined
      ? Math.max(0, options.busyTimeoutMs)
      : parseDuration(options.busyTimeout ?? '5s', 'busyTimeout');
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(table)) {
    throw new IdempotencyConfigInvalidError(
      `table: expected letters, digits and underscores, got ${JSON.stringify(table)}`,
    );
  }
  const sweepMs = sweepInterval === false ? undefined : parseDuration(sweepInterval, 'sweepInterval');
  const pollMs = parseDuration(options.pollInterval ?? 50, 'pollInterval');
  const synchronous = options.synchronous ?? 'normal';
  if (synchronous !== 'normal' && synchronous !== 'full') {
    throw new IdempotencyConfigInvalidError(
      `synchronous: expected 'normal' or 'full', got ${JSON.stringify(synchronous)}`,
    );
  }
  const checkpoint = options.checkpoint ?? 'background';
  if (checkpoint !== 'background' && checkpoint !== 'inline') {
    throw new IdempotencyConfigInvalidError(
      `checkpoint: expected 'background' or 'inline', got ${JSON.stringify(checkpoint)}`,
    );
  }
  const db = openDatabase(loadDriver(), path);
  // Setting up waits for other processes opening the same file at the same time (WAL switch,
  // table creation): once, at start, where waiting inside the call does no harm.
  db.pragma(`busy_timeout = ${Math.floor(busyTimeoutMs)}`);
  useWal(db, busyTimeoutMs);
  db.pragma(`synchronous = ${synchronous === 'full' ? 'FULL' : 'NORMAL'}`);
  createSqliteTable(db, table);
  if (options.layoutWarning !== false) warnOfOlderLayout(db, path, table);
  // From here on, SQLite's own busy handler would sleep inside the call, freezing this process's
  // event loop (other requests, lease renewals) for up to busyTimeoutMs; the group commit waits
  // for the lock asynchronously instead.
  db.pragma('busy_timeout = 0');
  const writes = groupCommit(db, { maxBatch: GROUP_COMMIT_MAX, busyTimeoutMs });

  const find = db.prepare(`SELECT ${FOUND_COLUMNS} FROM ${table} WHERE key = ?`).raw(true);
  const select = db.prepare(`SELECT ${FOUND_COLUMNS}, token, steps FROM ${table} WHERE key = ?`).raw(true);
  const insert = db.prepare(
    `INSERT OR REPLACE INTO ${table} (key, fingerprint, state, token, lease_until, expires_at, steps) VALUES (?, ?, ${IN_FLIGHT}, ?, ?, ?, NULL)`,
  );
  // Takes an absent key in one statement: no read first, and nothing written when the key exists.
  const insertIfAbsent = db.prepare(
    `INSERT INTO ${table} (key, fingerprint, state, token, lease_until, expires_at, steps) VALUES (?, ?, ${IN_FLIGHT}, ?, ?, ?, NULL) ON CONFLICT(key) DO NOTHING`,
  );
  const reclaim = db.prepare(
    `UPDATE ${table} SET state = ${IN_FLIGHT}, token = token + 1, lease_until = ?, expires_at = max(expires_at, ?) WHERE key = ?`,
  );
  // Each fenced write is one UPDATE whose WHERE carries the owner check, so it is atomic on its own.
  const owner = `key = ? AND token = ? AND state = ${IN_FLIGHT} AND (expires_at > ? OR lease_until > ?)`;
  const completeStmt = db.prepare(
    `UPDATE ${table} SET state = ${COMPLETED}, status = ?, headers = ?, body = ?, steps = NULL, expires_at = ? WHERE ${owner}`,
  );
  const releaseStmt = db.prepare(`UPDATE ${table} SET state = ${RELEASED}, expires_at = ? WHERE ${owner}`);
  const renewStmt = db.prepare(`UPDATE ${table} SET lease_until = ?, expires_at = max(expires_at, ?) WHERE ${owner}`);
  const stepSql = `UPDATE ${table} SET steps = json_set(coalesce(steps, '{}'), '$.' || json_quote(?), ?) WHERE ${owner}`;
  const stepStmt = db.prepare(stepSql);
  let transaction: ReturnType<typeof createSqliteTransaction> | undefined;
  try {
    transaction =
      options.database === undefined
        ? undefined
        : createSqliteTransaction({ database: options.database, path, saveStep: stepSql, busyTimeoutMs });
  } catch (error) {
    db.close();
    throw error;
  }
  const checkpointer = checkpoint === 'background' ? checkpointInBackground(db, path, onBackgroundError) : undefined;
  // Operations only (inspect, list, delete): never on the request path.
  const columns = 'key, state, token, lease_until, expires_at, steps, status, headers, body';
  const current = `(expires_at > @now OR (state = ${IN_FLIGHT} AND lease_until > @now))`;
  const inspectStmt = db.prepare(`SELECT ${columns} FROM ${table} WHERE key = @key AND ${current}`);
  const listStmt = db.prepare(
    `SELECT ${columns} FROM ${table} WHERE key > @after AND ${current} AND token <= @bornBefore
     AND (@state IS NULL OR state = @state) ORDER BY key LIMIT @limit`,
  );
  const deleteStmt = db.prepare(`DELETE FROM ${table} WHERE key = ? AND token = ?`);
  // A compare-and-swap in one UPDATE: only the completed, unexpired row that still holds the body read.
  const rewriteStmt = db.prepare(
    `UPDATE ${table} SET status = ?, headers = ?, body = ? WHERE key = ? AND state = ${COMPLETED} AND expires_at > ? AND body = ?`,
  );

  const sweepStmt = db.prepare(
    `DELETE FROM ${table} WHERE key IN (SELECT key FROM ${table} WHERE expires_at <= ? AND NOT (state = ${IN_FLIGHT} AND lease_until > ?) LIMIT ?)`,
  );

  const isLive = (row: Found, now: number) => row.state === IN_FLIGHT && row.lease_until > now;

  /**
   * What a claim answers without writing: a replay, a mismatch or a live in-flight record; or
   * `undefined` when the key is free to take (absent, expired, released or past its lease).
   */
  const answerOf = (row: Found | undefined, fingerprint: string, now: number): ClaimResult | undefined => {
    if (!row || (row.expires_at <= now && !isLive(row, now))) return undefined;
    if (row.fingerprint !== fingerprint) return { status: 'mismatch' };
    if (row.state === COMPLETED) {
      return { status: 'replay', response: responseOf(row) };
    }
    if (isLive(row, now)) return { status: 'in_flight', retryAfterMs: row.lease_until - now };
    return undefined;
  };

  // Runs inside the group commit's IMMEDIATE transaction, which takes the write lock before the
  // read, so no other process can claim between them.
  const claimTaking = ({ key, fingerprint, leaseMs, ttlMs }: ClaimInput): ClaimResult => {
    const now = Date.now();
    const leaseUntil = now + leaseMs;
    // Most keys that get this far are new (the read before the transaction found none): one insert
    // takes them, and only a key another process took meanwhile, or a row past its ttl, its lease
    // or released, is read. A new record's token is the current time, as below.
    if (insertIfAbsent.run(key, fingerprint, now, leaseUntil, Math.max(now + ttlMs, leaseUntil)).changes === 1) {
      return { status: 'acquired', token: now, steps: {}, recovered: false };
    }
    const row = rowOf(select.get(key) as RowValues | undefined);
    const answer = answerOf(row, fingerprint, now);
    if (answer) return answer;
    if (!row || row.expires_at <= now) {
      // A row past its ttl is gone; the next owner's token still goes above the last one.
      const token = Math.max(now, row ? row.token + 1 : 0);
      insert.run(key, fingerprint, token, leaseUntil, Math.max(now + ttlMs, leaseUntil));
      return { status: 'acquired', token, steps: {}, recovered: false };
    }
    reclaim.run(leaseUntil, leaseUntil, key);
    return {
      status: 'acquired',
      token: row.token + 1,
      steps: row.steps ? (JSON.parse(row.steps) as Record<string, string>) : {},
      recovered: row.state === IN_FLIGHT,
    };
  };

  // Replays, mismatches and waiting duplicates only read; in WAL mode a read takes no lock, so
  // they never queue behind (or block) another process's write. Only a possible take writes, in
  // the group commit that the batch's end flushes at once rather than a turn later.
  const claim = readBatch(db, {
    read: (input: ClaimInput) => foundOf(find.get(input.key) as FoundValues | undefined),
    answer: (input: ClaimInput, row: Found | undefined): ClaimResult | Promise<ClaimResult> =>
      answerOf(row, input.fingerprint, Date.now()) ?? writes.run(() => claimTaking(input)),
    afterBatch: () => writes.commitQueued(),
  });

  const changes = new EventEmitter();
  changes.setMaxListeners(0);
  // `now` is read when the write runs, inside the transaction, not when it was queued.
  const fenced = async (run: (now: number) => { changes: number }, key?: string): Promise<FencedResult> => {
    if ((await writes.run(() => run(Date.now()))).changes === 0) return 'stale';
    if (key !== undefined) changes.emit(key);
    return 'ok';
  };

  function sweep(): number {
    let total = 0;
    for (;;) {
      const now = Date.now();
      const deleted = sweepStmt.run(now, now, sweepBatchSize).changes;
      total += deleted;
      if (deleted < sweepBatchSize) return total;
    }
  }
  // A busy database is swept next time; expired rows already read as absent.
  const sweeper = startSweeper(sweepMs, sweep, (error) => onBackgroundError?.(error));

  return {
    claim,
    async complete(key: string, token: number, response: StoredResponse, ttlMs: number) {
      const body = asBuffer(response.body);
      const headers = JSON.stringify(response.headers);
      return fenced((now) => completeStmt.run(response.status, headers, body, now + ttlMs, key, token, now, now), key);
    },
    async release(key, token, ttlMs) {
      return fenced((now) => releaseStmt.run(now + ttlMs, key, token, now, now), key);
    },
    async renew(key, token, leaseMs) {
      return fenced((now) => renewStmt.run(now + leaseMs, now + leaseMs, key, token, now, now));
    },
    async saveStep(key, token, name, value) {
      return fenced((now) => stepStmt.run(name, value, key, token, now, now));
    },
    waitForChange(key, timeoutMs) {
      // Other processes cannot signal this one, so a waiter also wakes to re-read after pollInterval.
      return new Promise((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          changes.off(key, wake);
          resolve();
        };
        const timer = setTimeout(wake, Math.min(timeoutMs, pollMs));
        changes.on(key, wake);
      });
    },
    async inspect(key) {
      const row = inspectStmt.get({ key, now: Date.now() }) as (Row & { key: string }) | undefined;
      return row === undefined ? undefined : infoOf(row);
    },
    async list(query = {}) {
      const limit = pageLimit(query.limit);
      const now = Date.now();
      const rows = listStmt.all({
        after: query.cursor ?? '',
        now,
        bornBefore: now - (query.olderThanMs ?? 0),
        state: query.state === undefined ? null : STATE_CODES[query.state],
        limit: limit + 1,
      }) as (Row & { key: string })[];
      const records = rows.slice(0, limit).map(infoOf);
      return rows.length > limit ? { records, cursor: records[records.length - 1]?.key as string } : { records };
    },
    async delete(key, options = {}) {
      const now = Date.now();
      const row = inspectStmt.get({ key, now }) as (Row & { key: string }) | undefined;
      if (row === undefined) return 'absent';
      if (isLive(row, now) && options.force !== true) return 'in_flight';
      // Only the record read above: one claimed meanwhile has another token and stays.
      if ((await writes.run(() => deleteStmt.run(key, row.token))).changes === 0) return 'absent';
      changes.emit(key);
      await outlastToken(row.token);
      return 'deleted';
    },
    async rewriteResponse(key, expectedBody, response) {
      const { changes } = await writes.run(() =>
        rewriteStmt.run(
          response.status,
          JSON.stringify(response.headers),
          asBuffer(response.body),
          key,
          Date.now(),
          asBuffer(expectedBody),
        ),
      );
      return changes === 0 ? 'changed' : 'ok';
    },
    ...(transaction === undefined ? {} : { transaction }),
    sweep,
    migrate: () => migrateSqliteTable(db, table, busyTimeoutMs),
    schemaVersion: () => sqliteSchemaVersion(db, table),
    async close() {
      await sweeper.stop();
      writes.flush();
      // The thread's connection closes first, so the store's is the last one and, as SQLite does
      // for the last connection, checkpoints and removes the WAL.
      await checkpointer?.stop();
      db.close();
    },
  };
}
