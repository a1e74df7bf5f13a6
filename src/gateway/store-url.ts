import { IdempotencyConfigInvalidError, IdempotencyError } from '../vocabulary/index.js';
import { type OpenedStore, type OpenStoreOptions, redact } from './opened-store.js';

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
        store = createSqliteStore({ path });
      } catch (error) {
        if (error instanceof IdempotencyError) throw error;
        // better-sqlite3's own message names neither the file nor the flag.
        throw new IdempotencyConfigInvalidError(
          `--store sqlite:${path}: cannot open the database (${(error as Error).message ?? error}).`,
          { cause: error },
        );
      }
      return { store, description: `sqlite:${path}`, close: () => store.close() };
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
