/**
 * What opening a store from a `--store` URL gives back, and the redaction its messages use.
 * Kept out of store-url.ts, which picks the opener by scheme and loads it only when used: the
 * openers (store-redis.ts, store-postgres.ts) need these too, and importing them from
 * store-url.ts made each opener and store-url.ts import each other.
 *
 * @module
 */
import type { IdempotencyStore } from '../vocabulary/index.js';

/** A store the gateway opened from a URL, with what it must close on shutdown. */
export interface OpenedStore {
  store: IdempotencyStore;
  /** Human description for logs, without credentials. */
  description: string;
  close(): Promise<void>;
  /** A finer health check than the store's ping (PostgreSQL: reachable and migrated). */
  check?(): Promise<'ok' | 'unreachable' | 'not_migrated'>;
  /** What the gateway logs once the store is open: a layout it moved at start, or one worth moving. */
  notices?: StoreNotice[];
}

/** A line about the opened store, for the gateway's log. */
export interface StoreNotice {
  level: 'info' | 'warn';
  message: string;
}

/** Options of `openStore` (store-url.ts). */
export interface OpenStoreOptions {
  /**
   * PostgreSQL: create or upgrade the schema at start instead of refusing to start without it.
   * SQLite: move a table an earlier version made to the current layout at start (without it, the
   * older layout is served as it is, with a warning).
   * @default false
   */
  migrate?: boolean;
  /**
   * PostgreSQL: look at the schema at start (`idempo migrate` turns it off: it is there to create it).
   * @default true
   */
  checkSchema?: boolean;
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
