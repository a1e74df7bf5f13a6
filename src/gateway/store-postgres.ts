import { createRequire } from 'node:module';
import { IdempotencyDependencyError } from '../engine/errors.js';
import { createPostgresStore, type PostgresStore } from '../stores/postgres.js';
import type { PostgresPool } from '../stores/postgres-client.js';
import { type OpenedStore, redact } from './store-url.js';

const require = createRequire(import.meta.url);

interface Pool extends PostgresPool {
  end(): Promise<void>;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

/** Opens a `pg` Pool on a `postgres://` URL and builds the PostgreSQL store on it. */
export async function openPostgresStore(url: string): Promise<OpenedStore & { store: PostgresStore }> {
  let pg: { Pool: new (options: object) => Pool };
  try {
    pg = require('pg') as typeof pg;
  } catch (error) {
    throw new IdempotencyDependencyError('--store postgres:// needs pg: run `npm install pg`.', { cause: error });
  }
  // A short connect timeout turns an outage into 503s at once rather than requests that hang.
  const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 2_000, max: 20 });
  // An idle client's connection dying must not crash the gateway; the next query reconnects.
  pool.on('error', () => {});
  const store = createPostgresStore({ pool });
  return {
    store,
    description: redact(url),
    async close() {
      await store.close();
      await pool.end();
    },
  };
}
