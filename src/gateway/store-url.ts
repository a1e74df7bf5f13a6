import type { SqliteStore } from '../stores/sqlite.js';
import { IdempotencyConfigInvalidError, IdempotencyError } from '../vocabulary/index.js';
import { type OpenedStore, type OpenStoreOptions, redact, type StoreNotice } from './opened-store.js';

/**
 * Opens a store from a `--store` URL: `memory:`, `sqlite:PATH` (or `sqlite://PATH`),
 * `redis://…`/`rediss://…`, `postgres://…`/`postgresql://…`. Each store's library is imported
 * only when its URL is used.
 *
 * @example
 * ```ts
 * const { store, close } = await openStore('sqlite:./idempo.db');
 * ```
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<OpenedStore> {
  const scheme = url.slice(0, url.indexOf(':') + 1).toLowerCase();
  switch (scheme) {
    case 'memory:': {
      const { createMemoryStore } = await import('../stores/memory.js');
      const store = createMemoryStore();
      return { store, description: 'memory', close: () => store.close() };
    }
    case 'sqlite:': {
      const path = url.slice('sqlite:'.length).replace(/^\/\//, '') || './idempo.db';
      const { createSqliteStore } = await import('../stores/sqlite.js');
      let store: ReturnType<typeof createSqliteStore>;
      try {
        // The CLI says it itself: serve logs a warning line, migrate moves the table.
        store = createSqliteStore({ path, layoutWarning: false });
      } catch (error) {
        if (error instanceof IdempotencyError) throw error;
        // better-sqlite3's own message names neither the file nor the flag.
        throw new IdempotencyConfigInvalidError(
          `--store sqlite:${path}: cannot open the database (${(error as Error).message ?? error}).`,
          { cause: error },
        );
      }
      const description = `sqlite:${path}`;
      let notices: StoreNotice[];
      try {
        notices = await sqliteLayoutNotices(store, description, options.migrate === true);
      } catch (error) {
        await store.close();
        throw error;
      }
      return { store, description, close: () => store.close(), notices };
    }
    case 'redis:':
    case 'rediss:':
      return (await import('./store-redis.js')).openRedisStore(url);
    case 'postgres:':
    case 'postgresql:':
      return (await import('./store-postgres.js')).openPostgresStore(url, options);
    default:
      throw new IdempotencyConfigInvalidError(
        `--store: unsupported store URL ${JSON.stringify(redact(url))}; use memory:, sqlite:PATH, redis://HOST:PORT or postgres://USER@HOST/DB`,
      );
  }
}

/**
 * A file an earlier version made keeps its older table layout, which works but writes about twice
 * the bytes per request: moved at start when asked (`--migrate`), otherwise named in a warning
 * with the command that moves it.
 */
async function sqliteLayoutNotices(
  store: Pick<SqliteStore, 'schemaVersion' | 'migrate'>,
  description: string,
  migrate: boolean,
): Promise<StoreNotice[]> {
  const { SQLITE_SCHEMA_VERSION } = await import('../stores/sqlite-schema.js');
  if (migrate) {
    const { from, to, applied } = await store.migrate();
    if (applied.length === 0) return [];
    return [
      {
        level: 'info',
        message: `${description}: moved the table to the current layout (version ${from} to ${to}); every record was kept.`,
      },
    ];
  }
  if (store.schemaVersion() >= SQLITE_SCHEMA_VERSION) return [];
  return [
    {
      level: 'warn',
      message: `${description} has the table layout of an earlier idempo version (clustered by key): it works, but writes about twice the bytes per request. To move it, keeping every record: stop the gateway and run \`idempo migrate --store ${description}\`, or start it once with --migrate.`,
    },
  ];
}
