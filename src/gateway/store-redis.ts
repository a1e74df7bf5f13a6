import { createRequire } from 'node:module';
import { createRedisStore, type RedisStoreClient } from '../stores/redis.js';
import { IdempotencyDependencyMissingError } from '../vocabulary/index.js';
import { type OpenedStore, redact } from './opened-store.js';

const require = createRequire(import.meta.url);

interface RedisConnection extends RedisStoreClient {
  once(event: 'ready' | 'error', listener: (error?: Error) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  quit(): Promise<unknown>;
  disconnect(): void;
}

/**
 * Opens ioredis on a `redis://` URL with fail-fast settings (a request during an outage gets 503
 * at once instead of queueing) and builds the Redis store on it. A Redis that is down does not
 * stop it: the store answers 503 until the client has reconnected.
 */
export async function openRedisStore(url: string): Promise<OpenedStore> {
  let Redis: new (url: string, options: object) => RedisConnection;
  try {
    Redis = require('ioredis') as typeof Redis;
  } catch (error) {
    throw new IdempotencyDependencyMissingError('--store redis:// needs ioredis: run `npm install ioredis`.', {
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
  // Outages reach requests as store errors (503) and reconnects are automatic; without a listener
  // ioredis would also report every failed reconnect as an unhandled 'error' event.
  client.on('error', () => {});
  // Wait for the first connection so the first requests do not fail while it opens, but start
  // anyway when Redis is down: the gateway answers 503 until ioredis has reconnected, and says so
  // in its log and on /healthz, rather than exit and leave an orchestrator restarting it in a loop.
  await new Promise<void>((resolve) => {
    client.once('ready', () => resolve());
    client.once('error', () => resolve());
  });
  const store = createRedisStore({ client });
  return {
    store,
    description: redact(url),
    async close() {
      await store.close?.();
      // QUIT cannot be sent while Redis is down (no offline queue): then just drop the socket.
      await client.quit().catch(() => client.disconnect());
    },
  };
}
