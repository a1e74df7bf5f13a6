/**
 * What the PostgreSQL store needs from `pg`, typed as the few calls it makes so runtime code never
 * imports `pg`; plus identifier quoting and SQLSTATE matching. The store's own coded error,
 * `IdempotencyStoreNotMigratedError`, is with all the others in src/vocabulary/errors.ts.
 *
 * @module
 */
import { IdempotencyConfigInvalidError, IdempotencyStoreNotMigratedError } from '../vocabulary/index.js';

/** The part of a `pg` query result the store reads. */
export interface PostgresQueryResult {
  /** Result rows, one object per row, keyed by column name. */
  rows: Record<string, unknown>[];
  /** Rows the statement affected or returned. */
  rowCount: number | null;
}

/** Anything that runs a parameterised query: a `pg` Pool or a checked-out client. */
export interface PostgresQueryable {
  /**
   * Runs `text` with `$1…$n` bound to `values`; given `{ name, text, values }`, as a named
   * (prepared) statement, parsed and planned once per connection.
   */
  query(text: string | PostgresNamedQuery, values?: unknown[]): Promise<PostgresQueryResult>;
}

/** A named statement, as `pg` takes it: prepared once per connection, then only executed. */
export interface PostgresNamedQuery {
  name: string;
  text: string;
  values: unknown[];
}

/** A `LISTEN` notification as `pg` delivers it. */
export interface PostgresNotification {
  /** The channel it was sent on. */
  channel: string;
  /** Its payload (the record key for idempo). */
  payload?: string | undefined;
}

/** A client checked out of the pool (`pg` `PoolClient`). */
export interface PostgresPoolClient extends PostgresQueryable {
  /** Returns the client to the pool; passing an error (or `true`) destroys it instead. */
  release(destroy?: Error | boolean): void;
  /** Subscribes to `LISTEN` notifications. */
  on(event: 'notification', listener: (message: PostgresNotification) => void): unknown;
  /** Subscribes to connection errors; a checked-out client without this listener crashes the process on error. */
  on(event: 'error', listener: (error: Error) => void): unknown;
  /** Subscribes to the connection ending. */
  on(event: 'end', listener: () => void): unknown;
}

/**
 * The minimal `pg` Pool the store calls: `query()` for single statements, `connect()` for the
 * migration transaction and the one `LISTEN` connection. A `pg` `Pool` satisfies it as is.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * const pool: PostgresPool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * ```
 */
export interface PostgresPool extends PostgresQueryable {
  /** Checks a client out of the pool. */
  connect(): Promise<PostgresPoolClient>;
}

/** SQLSTATE codes the store reacts to (PostgreSQL appendix A). */
export const SQLSTATE = {
  undefinedTable: '42P01',
  undefinedColumn: '42703',
} as const;

/**
 * The SQLSTATE of an error the server sent (`pg`'s `DatabaseError`, which carries a `severity`);
 * undefined for failures below SQL such as a refused or reset connection (`ECONNRESET`, …).
 */
export function sqlState(error: unknown): string | undefined {
  if (typeof error !== 'object' || error === null) return undefined;
  const { code, severity } = error as { code?: unknown; severity?: unknown };
  return typeof severity === 'string' && typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Turns "no such table/column" into the coded not-migrated error; passes everything else through. */
export function translateError(error: unknown, table: string): unknown {
  const state = sqlState(error);
  if (state === SQLSTATE.undefinedTable || state === SQLSTATE.undefinedColumn) {
    return new IdempotencyStoreNotMigratedError(
      `idempo's PostgreSQL table ${table} is missing or out of date (SQLSTATE ${state}). Run the migration once per database: ` +
        '`await store.migrate()`, `await migratePostgres(pool, { table })` or `idempo migrate --store postgres://…`; ' +
        'or create the store with `autoMigrate: true`.',
      { cause: error },
    );
  }
  return error;
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;

/**
 * Validates a table or channel name (`name` or `schema.name`, letters, digits and `_`, up to 48
 * characters a part so derived index names stay under PostgreSQL's 63) and returns it quoted.
 * Quoting keeps the name exactly as written, so `Keys` and `keys` are different tables.
 */
export function quoteIdentifier(name: string, option: string, allowSchema = true): string {
  const parts = typeof name === 'string' ? name.split('.') : [];
  const valid = parts.length > 0 && parts.length <= (allowSchema ? 2 : 1) && parts.every((p) => IDENTIFIER.test(p));
  if (!valid) {
    throw new IdempotencyConfigInvalidError(
      `${option}: expected ${allowSchema ? 'a name or schema.name' : 'a name'} of letters, digits and _ (up to 48 characters), got ${JSON.stringify(name)}`,
    );
  }
  return parts.map((p) => `"${p}"`).join('.');
}

/** The last part of a possibly schema-qualified name, unquoted. */
export function baseName(name: string): string {
  return name.slice(name.lastIndexOf('.') + 1);
}
