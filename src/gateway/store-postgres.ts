import { createRequire } from 'node:module';
import { createPostgresStore, type PostgresStore } from '../stores/postgres.js';
import { type PostgresPool, sqlState } from '../stores/postgres-client.js';
import { DEFAULT_MIGRATIONS_TABLE, DEFAULT_TABLE, POSTGRES_SCHEMA_VERSION } from '../stores/postgres-migrate.js';
import { IdempotencyDependencyMissingError, IdempotencyStoreNotMigratedError } from '../vocabulary/index.js';
import { type OpenedStore, type OpenStoreOptions, redact } from './opened-store.js';

const require = createRequire(import.meta.url);

interface Pool extends PostgresPool {
  end(): Promise<void>;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

/** The schema version the migrations table records for the default table in the current schema. */
const SCHEMA_VERSION_SQL = `SELECT version FROM ${DEFAULT_MIGRATIONS_TABLE} WHERE table_name = current_schema() || '.${DEFAULT_TABLE}'`;

/**
 * Whether the database has idempo's schema at the version this build needs. A missing migrations
 * table (SQLSTATE 42P01) or an older version is `not_migrated`; any failure below SQL (refused,
 * reset, timeout) is `unreachable`.
 */
export async function schemaStatus(pool: PostgresPool): Promise<'ok' | 'unreachable' | 'not_migrated'> {
  try {
    const result = await pool.query(SCHEMA_VERSION_SQL);
    const version = Number((result.rows[0] as { version?: unknown } | undefined)?.version ?? 0);
    return version >= POSTGRES_SCHEMA_VERSION ? 'ok' : 'not_migrated';
  } catch (error) {
    return sqlState(error) === '42P01' ? 'not_migrated' : 'unreachable';
  }
}

/**
 * Opens a `pg` Pool on a `postgres://` URL and builds the PostgreSQL store on it. On a database
 * without idempo's schema it refuses to start, naming the migrate command, unless `migrate` asks
 * it to run the migration; on one it cannot reach it starts (keyed requests get 503 until it answers).
 */
export async function openPostgresStore(
  url: string,
  { migrate = false, checkSchema = true }: OpenStoreOptions = {},
): Promise<OpenedStore & { store: PostgresStore }> {
  let pg: { Pool: new (options: object) => Pool };
  try {
    pg = require('pg') as typeof pg;
  } catch (error) {
    throw new IdempotencyDependencyMissingError('--store postgres:// needs pg: run `npm install pg`.', {
      cause: error,
    });
  }
  // A short connect timeout turns an outage into 503s at once rather than requests that hang.
  const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 2_000, max: 20 });
  // An idle client's connection dying must not crash the gateway; the next query reconnects.
  pool.on('error', () => {});
  const store = createPostgresStore({ pool });
  const close = async () => {
    await store.close();
    await pool.end();
  };
  if (checkSchema && (await schemaStatus(pool)) === 'not_migrated') {
    if (migrate) {
      await store.migrate();
    } else {
      await close();
      throw new IdempotencyStoreNotMigratedError(
        `${redact(url)} has no idempo schema (table ${DEFAULT_TABLE} at version ${POSTGRES_SCHEMA_VERSION}). Run \`idempo migrate --store ${redact(url)}\` once per database, or start with --migrate.`,
      );
    }
  }
  return { store, description: redact(url), close, check: () => schemaStatus(pool) };
}
