/**
 * The SQLite store's `transaction`: the application's writes and idempo's step in one
 * transaction on the application's own better-sqlite3 connection to the store's file.
 *
 * Why the application's connection and not the store's: the store's connection writes through
 * the group commit (src/stores/sqlite-group-commit.ts), whose batches are better-sqlite3
 * transactions; on a connection already inside a transaction those become savepoints, so an
 * application transaction open on that connection across an `await` would swallow claims and
 * completions of other requests, and undo them if it rolled back. On two connections nothing can
 * interleave wrongly: each transaction here runs synchronously from `BEGIN IMMEDIATE` to `COMMIT`
 * (so no group commit of this process runs inside it), and SQLite's write lock orders it against
 * every other connection and process. A group commit that finds the lock taken waits for it, as it
 * waits for any other process.
 *
 * ```
 * BEGIN IMMEDIATE                the write lock, before anything is read
 *   work(db)                     the application's writes, synchronous
 *   UPDATE … steps … WHERE owner  the step, fenced by the token
 *   ├─ 1 row ─▶ COMMIT            effect and step together ('ok')
 *   └─ 0 rows ▶ ROLLBACK          the token lost the record: effect undone ('stale')
 * ```
 *
 * @module
 */
import { realpathSync } from 'node:fs';
import { resolve } from 'node:path';
import {
  type FencedResult,
  IdempotencyConfigInvalidError,
  IdempotencyTransactionUnsupportedError,
  type TransactionStep,
  type TransactionWork,
} from '../vocabulary/index.js';
import { isBusy, retryWhileBusy } from './sqlite-busy.js';

/**
 * The part of a better-sqlite3 `Database` the transaction uses: your connection, open on the
 * store's file. A better-sqlite3 `Database` satisfies it as is.
 */
export interface SqliteApplicationDatabase {
  /** The file it was opened on. */
  readonly name: string;
  /** True for an in-memory database, which no other connection can share. */
  readonly memory: boolean;
  /** True while a transaction is open on it. */
  readonly inTransaction: boolean;
  prepare(source: string): { run(...params: unknown[]): { changes: number } };
  pragma(source: string, options?: { simple: boolean }): unknown;
  transaction(fn: (step: TransactionStep | undefined, work: () => string) => void): {
    immediate(step: TransactionStep | undefined, work: () => string): void;
  };
}

/** What the transaction needs of the store. */
export interface SqliteTransactionOptions {
  /** The application's connection. */
  database: SqliteApplicationDatabase;
  /** The store's file, to check that `database` is open on it. */
  path: string;
  /** The save-step statement: params name, JSON text, key, token, now, now. */
  saveStep: string;
  /** How long `BEGIN IMMEDIATE` may wait for another connection's lock, in ms. */
  busyTimeoutMs: number;
}

/** Thrown inside the transaction to roll it back when the step's fence refuses it. */
const STALE = Symbol('stale');

function samePath(a: string, b: string): boolean {
  const canonical = (path: string) => {
    try {
      return realpathSync(resolve(path));
    } catch {
      return resolve(path);
    }
  };
  return canonical(a) === canonical(b);
}

/** Returns the store's `transaction` operation on `database`; checks at once that it can work. */
export function createSqliteTransaction(options: SqliteTransactionOptions) {
  const { database, path, saveStep, busyTimeoutMs } = options;
  if (typeof database?.prepare !== 'function' || typeof database.transaction !== 'function') {
    throw new IdempotencyConfigInvalidError('createSqliteStore: `database` must be a better-sqlite3 Database');
  }
  if (database.memory || path === ':memory:' || !samePath(database.name, path)) {
    throw new IdempotencyConfigInvalidError(
      `createSqliteStore: \`database\` must be open on the store's own file (${path}), not on ${JSON.stringify(database.name)}: idempo's record and your writes commit together only in one database file.`,
    );
  }
  let save: { run(...params: unknown[]): { changes: number } };
  try {
    save = database.prepare(saveStep);
  } catch (error) {
    throw new IdempotencyConfigInvalidError(
      "createSqliteStore: `database` cannot see the store's table; open it on the store's file",
      { cause: error },
    );
  }
  const inTransaction = database.transaction((step: TransactionStep | undefined, work: () => string) => {
    const text = work();
    if (typeof text !== 'string') {
      // Still running outside the transaction, which is rolled back now: keep its rejection quiet.
      (text as PromiseLike<unknown>).then(undefined, () => {});
      throw new IdempotencyTransactionUnsupportedError(
        'ctx.transaction on SQLite: the function returned a promise, but better-sqlite3 transactions are synchronous and cannot span an await. It was rolled back; pass a synchronous function.',
      );
    }
    if (step === undefined) return;
    const now = Date.now();
    if (save.run(step.name, text, step.key, step.token, now, now).changes === 0) throw STALE;
  });

  return async function transaction(step: TransactionStep | undefined, work: TransactionWork): Promise<FencedResult> {
    if (database.inTransaction) {
      throw new IdempotencyTransactionUnsupportedError(
        'ctx.transaction on SQLite: your database connection is already in a transaction, which could still roll back after idempo counted this one as committed. Nothing was run.',
      );
    }
    let started = false;
    try {
      await retryWhileBusy(
        () => {
          started = false;
          // The application's connection keeps its own busy_timeout (better-sqlite3's default is
          // 5 s), whose handler would sleep inside BEGIN IMMEDIATE and freeze the event loop. It
          // is set to 0 for this synchronous attempt only, so the user's other statements on the
          // connection keep their wait, and the lock is waited for here, on timers.
          const busyTimeout = database.pragma('busy_timeout', { simple: true });
          database.pragma('busy_timeout = 0');
          try {
            inTransaction.immediate(step, () => {
              started = true;
              return work(database) as string;
            });
          } finally {
            database.pragma(`busy_timeout = ${Number(busyTimeout)}`);
          }
        },
        busyTimeoutMs,
        // Another connection holds the write lock and nothing ran yet: wait for it without
        // blocking the event loop, as the store's own writes do.
        (error) => !started && isBusy(error),
      );
      return 'ok';
    } catch (error) {
      if (error === STALE) return 'stale';
      throw error;
    }
  };
}
