/**
 * The PostgreSQL store's schema, as numbered migrations applied by {@link migratePostgres}.
 *
 * Nothing here runs on the request path unless the store is created with `autoMigrate: true`:
 * DDL takes strong locks and needs rights an app's database user often lacks, so the table is
 * created by an explicit, versioned step (`store.migrate()`, `migratePostgres(pool)` or
 * `idempo migrate --store postgres://…`) at deploy time.
 *
 * @module
 */
import { baseName, type PostgresPool, quoteIdentifier, sqlState } from './postgres-client.js';

/** Options of {@link migratePostgres}; the same names as the store's. */
export interface PostgresMigrateOptions {
  /**
   * The records table (`name` or `schema.name`).
   * @default 'idempo_keys'
   */
  table?: string;
  /**
   * The small table that records which schema version each records table is at.
   * @default 'idempo_migrations'
   */
  migrationsTable?: string;
}

/** What {@link migratePostgres} did. */
export interface PostgresMigrationResult {
  /** The records table, schema-qualified. */
  table: string;
  /** The schema version before the run (0: no table yet). */
  from: number;
  /** The schema version after the run. */
  to: number;
  /** The versions this run applied; empty when the table was already up to date. */
  applied: number[];
}

/** The schema version this release of idempo reads and writes. */
export const POSTGRES_SCHEMA_VERSION = 1;

/** Default name of the records table. */
export const DEFAULT_TABLE = 'idempo_keys';
/** Default name of the schema-version table. */
export const DEFAULT_MIGRATIONS_TABLE = 'idempo_migrations';

/**
 * Key of the transaction-scoped advisory lock every migration run takes before it looks at the
 * schema: concurrent runs (several app instances booting with `autoMigrate`, a CLI run during a
 * deploy) queue behind one another, and each later run finds the work done. Without it two
 * `CREATE TABLE IF NOT EXISTS` can still collide on the catalog (a unique violation on
 * `pg_type`). The number is "idempo" in ASCII.
 */
const MIGRATION_LOCK_KEY = '115879919317103';

interface Migration {
  version: number;
  /** Statements run in order inside the migration transaction. */
  up(table: string, base: string): string[];
}

/**
 * Version 1: one row per scoped key.
 *
 * - `key` uses the "C" collation: keys are hashes, so byte order is all a btree needs and
 *   comparisons skip locale rules.
 * - `token` is `bigint`: a fresh record starts at the database clock in milliseconds.
 * - `claim_id` is the random id of the claim that last acquired the record; the claim statement
 *   compares it with its own to learn whether it won (see `CLAIM_SQL`).
 * - `lease_until` is set only while `in_flight`; `expires_at` is never before it.
 * - `fillfactor = 90` leaves room in each page so the claim's row update (which rewrites the row
 *   even when it changes nothing) stays a HOT update and does not touch the indexes.
 * - The `expires_at` index serves the batched sweep.
 */
const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    up: (table, base) => [
      `CREATE TABLE IF NOT EXISTS ${table} (
        key         text COLLATE "C" PRIMARY KEY,
        fingerprint text        NOT NULL,
        state       text        NOT NULL CHECK (state IN ('in_flight', 'completed', 'released')),
        token       bigint      NOT NULL,
        claim_id    uuid        NOT NULL,
        recovered   boolean     NOT NULL DEFAULT false,
        lease_until timestamptz,
        expires_at  timestamptz NOT NULL,
        steps       jsonb       NOT NULL DEFAULT '{}'::jsonb,
        status      integer,
        headers     jsonb,
        body        bytea,
        updated_at  timestamptz NOT NULL,
        CHECK ((state = 'in_flight') = (lease_until IS NOT NULL)),
        CHECK (lease_until IS NULL OR expires_at >= lease_until)
      ) WITH (fillfactor = 90)`,
      `CREATE INDEX IF NOT EXISTS "${base}_expires_at_idx" ON ${table} (expires_at)`,
    ],
  },
];

/**
 * Creates or upgrades the PostgreSQL store's table to {@link POSTGRES_SCHEMA_VERSION}. Idempotent
 * and safe to run from several processes at once: one transaction, serialised by an advisory
 * lock, records the version it reached in `migrationsTable`. Uses one client from `pool` and
 * returns it; never ends the pool.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * import { migratePostgres } from 'idempo/postgres';
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });
 * const { from, to } = await migratePostgres(pool, { table: 'idempo_keys' });
 * await pool.end();
 * ```
 */
export async function migratePostgres(
  pool: PostgresPool,
  options: PostgresMigrateOptions = {},
): Promise<PostgresMigrationResult> {
  const { table: name = DEFAULT_TABLE, migrationsTable: migrationsName = DEFAULT_MIGRATIONS_TABLE } = options;
  const table = quoteIdentifier(name, 'table');
  const migrations = quoteIdentifier(migrationsName, 'migrationsTable');
  const schema = name.includes('.') ? name.slice(0, name.indexOf('.')) : null;
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('BEGIN');
    try {
      await client.query('SELECT pg_advisory_xact_lock($1::bigint)', [MIGRATION_LOCK_KEY]);
      await client.query(
        `CREATE TABLE IF NOT EXISTS ${migrations} (
          table_name text PRIMARY KEY,
          version    integer     NOT NULL,
          applied_at timestamptz NOT NULL DEFAULT clock_timestamp()
        )`,
      );
      const qualified = await client.query('SELECT coalesce($1::text, current_schema()) AS schema', [schema]);
      const fullName = `${String(qualified.rows[0]?.schema)}.${baseName(name)}`;
      const current = await client.query(`SELECT version FROM ${migrations} WHERE table_name = $1`, [fullName]);
      const from = Number(current.rows[0]?.version ?? 0);
      const applied: number[] = [];
      for (const migration of MIGRATIONS) {
        if (migration.version <= from) continue;
        for (const statement of migration.up(table, baseName(name))) await client.query(statement);
        applied.push(migration.version);
      }
      const to = Math.max(from, ...applied);
      if (applied.length > 0) {
        await client.query(
          `INSERT INTO ${migrations} (table_name, version) VALUES ($1, $2)
           ON CONFLICT (table_name) DO UPDATE SET version = excluded.version, applied_at = clock_timestamp()`,
          [fullName, to],
        );
      }
      await client.query('COMMIT');
      return { table: fullName, from, to, applied };
    } catch (error) {
      await client.query('ROLLBACK').catch((rollbackError: unknown) => {
        broken = rollbackError instanceof Error ? rollbackError : new Error(String(rollbackError));
      });
      throw error;
    }
  } catch (error) {
    broken ??= isConnectionLevel(error) ? (error as Error) : undefined;
    throw error;
  } finally {
    client.release(broken);
  }
}

/** A failure without a SQLSTATE happened below SQL (socket closed, timeout): the client must not go back to the pool. */
function isConnectionLevel(error: unknown): boolean {
  return error instanceof Error && sqlState(error) === undefined;
}
