import type { IdempotencyStore } from '../vocabulary/index.js';

/** A store with a count of its operations under way. */
export interface TrackedStore {
  readonly store: IdempotencyStore;
  /** Store operations started and not yet settled. */
  pending(): number;
}

/**
 * Counts the store operations under way, so a drain at shutdown closes the store only after the
 * completions it started have landed: a completion that the listener's end set off runs after the
 * listener has returned, when the client may long be gone (answered early, or hung up).
 *
 * A store with synchronous operations (memory) is returned as it is: nothing of it is ever under
 * way, and a wrapper would hide its `sync` fast path from the engine.
 *
 * @example
 * ```ts
 * const tracked = trackStore(store);
 * createIdempotency({ store: tracked.store });
 * while (tracked.pending() > 0) await sleep(10);
 * ```
 */
export function trackStore(store: IdempotencyStore): TrackedStore {
  if (store.sync !== undefined) return { store, pending: () => 0 };
  let pending = 0;
  const done = () => {
    pending--;
  };
  function counted<A extends unknown[], R>(operation: (...args: A) => Promise<R>) {
    return function countedOperation(...args: A): Promise<R> {
      pending++;
      const result = operation.apply(store, args);
      result.then(done, done);
      return result;
    };
  }
  // A plain object calling the store's own methods on the store: a class-based store keeps its `this`.
  const tracked: IdempotencyStore = {
    claim: counted(store.claim),
    complete: counted(store.complete),
    release: counted(store.release),
    renew: counted(store.renew),
    saveStep: counted(store.saveStep),
  };
  const { waitForChange, close, ping } = store;
  if (waitForChange) tracked.waitForChange = (key, timeoutMs) => waitForChange.call(store, key, timeoutMs);
  if (close) tracked.close = () => close.call(store);
  if (ping) tracked.ping = () => ping.call(store);
  return { store: tracked, pending: () => pending };
}
