import { IdempotencyConfigError } from '../engine/errors.js';
import type { IdempotencyStore } from '../stores/contract.js';

/** A store the gateway opened from a URL, with what it must close on shutdown. */
export interface OpenedStore {
  store: IdempotencyStore;
  /** Human description for logs, without credentials. */
  description: string;
  close(): Promise<void>;
  /** A finer health check than the store's ping (PostgreSQL: reachable and migrated). */
  check?(): Promise<'ok' | 'unreachable' | 'not_migrated'>;
}

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /**
   * PostgreSQL: create or upgrade the schema at start instead of refusing to start without it.
   * @default false
   */
  migrate?: boolean;
  /**
   * PostgreSQL: look at the schema at start (`idempo migrate` turns it off: it is there to create it).
   * @default true
   */
  checkSchema?: boolean;
}

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
      const store = createSqliteStore({ path });
      return { store, description: `sqlite:${path}`, close: () => store.close() };
    }
    case 'redis:':
    case 'rediss:':
      return (await import('./store-redis.js')).openRedisStore(url);
    case 'postgres:':
    case 'postgresql:':
      return (await import('./store-postgres.js')).openPostgresStore(url, options);
    default:
      throw new IdempotencyConfigError(
        `--store: unsupported store URL ${JSON.stringify(redact(url))}; use memory:, sqlite:PATH, redis://HOST:PORT or postgres://USER@HOST/DB`,
      );
  }
}

/** The URL with any password replaced, for logs and error messages. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return url;
  }
}
