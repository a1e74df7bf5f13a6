import type { IdempotencyStore } from '../stores/contract.js';

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
