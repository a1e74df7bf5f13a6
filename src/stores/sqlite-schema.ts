/**
 * The SQLite store's table: how it is made, which layout a file has, and the move from the
 * layout of earlier versions.
 *
 * @module
 */
import { IdempotencyStoreUnavailableError } from '../vocabulary/index.js';
import { retryWhileBusy } from './sqlite-busy.js';

/**
 * The layout a table made now has. Version 1, made by earlier versions, clustered the rows by key
 * (`WITHOUT ROWID`); version 2 keeps them in rowid order with a unique index on the key.
 */
export const SQLITE_SCHEMA_VERSION = 2;

/** What {@link migrateSqliteTable} did. */
export interface SqliteMigrationResult {
  /** The records table. */
  table: string;
  /** The layout before the run: 1 clustered by key, 2 in rowid order. */
  from: number;
  /** The layout after the run. */
  to: number;
  /** The versions this run applied; empty when the table already had the current layout. */
  applied: number[];
}

/** The part of better-sqlite3's `Database` this module uses. */
export interface SchemaDatabase {
  exec(source: string): unknown;
  prepare(source: string): { get(...params: unknown[]): unknown };
  readonly inTransaction: boolean;
}

const COLUMNS = `
      key TEXT NOT NULL PRIMARY KEY,
      fingerprint TEXT NOT NULL,
      state INTEGER NOT NULL,
      token INTEGER NOT NULL,
      lease_until INTEGER NOT NULL,
      expires_at INTEGER NOT NULL,
      steps TEXT,
      status INTEGER,
      headers TEXT,
      body BLOB`;

const COLUMN_NAMES = 'key, fingerprint, state, token, lease_until, expires_at, steps, status, headers, body';

/**
 * Creates the table and its index when missing; a table that exists keeps its layout.
 *
 * A rowid table, not `WITHOUT ROWID`: keys are hashes, so a table clustered by key put each new
 * row, and later its response, on a random page, and every claim and every completion wrote a page
 * of its own. In rowid order the rows of one commit share the last pages, and a claim dirties one
 * random page, of the small key index; that halved the bytes written per request. The index on
 * `expires_at` lets the sweep find expired rows without a scan.
 */
export function createSqliteTable(db: SchemaDatabase, table: string): void {
  db.exec(`
    CREATE TABLE IF NOT EXISTS ${table} (${COLUMNS}
    );
    CREATE INDEX IF NOT EXISTS ${table}_expires_at ON ${table} (expires_at);
  `);
}

/** The layout of `table`: 1 clustered by key, 2 in rowid order, 0 when there is no such table. */
export function sqliteSchemaVersion(db: SchemaDatabase, table: string): number {
  const row = db.prepare(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?`).get(table) as
    | { sql: string }
    | undefined;
  if (row === undefined) return 0;
  return /\bWITHOUT\s+ROWID\b/i.test(row.sql) ? 1 : SQLITE_SCHEMA_VERSION;
}

/**
 * Moves a table clustered by key to rowid order, in one `IMMEDIATE` transaction: every record
 * keeps its state, token, steps and response. Other connections' writes wait for it, and their
 * statements see the new table once it commits. Another connection's write lock is waited out on
 * timers, as the store's own writes do, up to `busyTimeoutMs`; the copy itself runs synchronously.
 */
export async function migrateSqliteTable(
  db: SchemaDatabase,
  table: string,
  busyTimeoutMs: number,
): Promise<SqliteMigrationResult> {
  const from = sqliteSchemaVersion(db, table);
  if (from === SQLITE_SCHEMA_VERSION) return { table, from, to: from, applied: [] };
  const moved = `${table}_rowid`;
  const move = (): SqliteMigrationResult => {
    db.exec('BEGIN IMMEDIATE');
    try {
      // Another process may have moved it between the look above and the lock.
      const locked = sqliteSchemaVersion(db, table);
      if (locked !== 1) {
        db.exec('COMMIT');
        return { table, from, to: locked, applied: [] };
      }
      db.exec(`
        CREATE TABLE ${moved} (${COLUMNS}
        );
        INSERT INTO ${moved} (${COLUMN_NAMES}) SELECT ${COLUMN_NAMES} FROM ${table};
        DROP TABLE ${table};
        ALTER TABLE ${moved} RENAME TO ${table};
        CREATE INDEX ${table}_expires_at ON ${table} (expires_at);
      `);
      db.exec('COMMIT');
      return { table, from, to: SQLITE_SCHEMA_VERSION, applied: [SQLITE_SCHEMA_VERSION] };
    } catch (error) {
      if (db.inTransaction) db.exec('ROLLBACK');
      throw error;
    }
  };
  try {
    // Only BEGIN IMMEDIATE can find the lock taken, and then nothing has run yet.
    return await retryWhileBusy(move, busyTimeoutMs);
  } catch (error) {
    throw new IdempotencyStoreUnavailableError(
      `The SQLite store could not move ${table} to rowid order (${(error as Error).message}); the table is as it was.`,
      { cause: error },
    );
  }
}
