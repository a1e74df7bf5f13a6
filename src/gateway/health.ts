import type { IdempotencyStore } from '../vocabulary/index.js';

/** Options of {@link createStoreHealth}. */
export interface StoreHealthOptions {
  /**
   * How long one answer is reused, in ms: a flood of health checks costs the store one ping per period.
   * @default 1000
   */
  cacheMs?: number;
  /**
   * How long a ping may take before the store counts as unreachable, in ms.
   * @default 2000
   */
  timeoutMs?: number;
}

/**
 * Whether the store answers, for `/healthz`. Calls the store's optional `ping()` at most once per
 * `cacheMs` (concurrent checks share one ping); a store without `ping` (memory, SQLite: nothing to
 * reach) is always reachable.
 *
 * @example
 * ```ts
 * const storeReachable = createStoreHealth(store);
 * res.writeHead((await storeReachable()) ? 200 : 503);
 * ```
 */
export function createStoreHealth(
  store: IdempotencyStore,
  { cacheMs = 1_000, timeoutMs = 2_000 }: StoreHealthOptions = {},
): () => Promise<boolean> {
  let answer: Promise<boolean> | undefined;
  let answeredAt = 0;
  return function storeReachable(): Promise<boolean> {
    if (store.ping === undefined) return Promise.resolve(true);
    if (answer !== undefined && Date.now() - answeredAt < cacheMs) return answer;
    answeredAt = Date.now();
    answer = pingWithin(store, timeoutMs);
    return answer;
  };
}

/** What `/healthz` says of the store. */
export type StoreStatus = 'ok' | 'unreachable' | 'not_migrated';

/**
 * The store's status for `/healthz`: `check` (e.g. a PostgreSQL schema check) when given, else
 * {@link createStoreHealth}'s ping, cached for `cacheMs` like it.
 *
 * @example
 * ```ts
 * const status = createStoreStatus(store, () => schemaStatus(pool));
 * if ((await status()) !== 'ok') res.writeHead(503);
 * ```
 */
export function createStoreStatus(
  store: IdempotencyStore,
  check?: () => Promise<StoreStatus>,
  { cacheMs = 1_000, timeoutMs = 2_000 }: StoreHealthOptions = {},
): () => Promise<StoreStatus> {
  if (check === undefined) {
    const reachable = createStoreHealth(store, { cacheMs, timeoutMs });
    return async function storeStatus() {
      return (await reachable()) ? 'ok' : 'unreachable';
    };
  }
  let answer: Promise<StoreStatus> | undefined;
  let answeredAt = 0;
  return function storeStatus(): Promise<StoreStatus> {
    if (answer !== undefined && Date.now() - answeredAt < cacheMs) return answer;
    answeredAt = Date.now();
    answer = new Promise<StoreStatus>((resolve) => {
      const timer = setTimeout(() => resolve('unreachable'), timeoutMs);
      check().then(
        (status) => {
          clearTimeout(timer);
          resolve(status);
        },
        () => {
          clearTimeout(timer);
          resolve('unreachable');
        },
      );
    });
    return answer;
  };
}

function pingWithin(store: IdempotencyStore, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), timeoutMs);
    (store.ping as () => Promise<void>).call(store).then(
      () => {
        clearTimeout(timer);
        resolve(true);
      },
      () => {
        clearTimeout(timer);
        resolve(false);
      },
    );
  });
}
