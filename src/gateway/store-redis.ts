import { createRequire } from 'node:module';
import { IdempotencyDependencyError } from '../engine/errors.js';
import type { RedisStoreClient } from '../stores/redis.js';
import { createRedisStore } from '../stores/redis.js';
import { type OpenedStore, redact } from './store-url.js';

const require = createRequire(import.meta.url);

interface RedisConnection extends RedisStoreClient {
  once(event: 'ready' | 'error', listener: (error?: Error) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  quit(): Promise<unknown>;
}

/**
 * Opens ioredis on a `redis://` URL with fail-fast settings (a request during an outage gets 503
 * at once instead of queueing) and builds the Redis store on it.
 */
export async function openRedisStore(url: string): Promise<OpenedStore> {
  let Redis: new (url: string, options: object) => RedisConnection;
  try {
    Redis = require('ioredis') as typeof Redis;
  } catch (error) {
    throw new IdempotencyDependencyError('--store redis:// needs ioredis: run `npm install ioredis`.', {
      cause: error,
    });
  }
  const client = new Redis(url, {
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    connectTimeout: 2_000,
    commandTimeout: 2_000,
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
  });
  await new Promise<void>((resolve, reject) => {
    client.once('ready', () => resolve());
    client.once('error', (error) => reject(error));
  });
  // Outages reach requests as store errors (503) and reconnects are automatic; without a listener
  // ioredis would also report every failed reconnect as an unhandled 'error' event.
  client.on('error', () => {});
  const store = createRedisStore({ client });
  return {
    store,
    description: redact(url),
    async close() {
      await store.close?.();
      await client.quit();
    },
  };
}
