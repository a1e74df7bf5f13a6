/**
 * A store that wraps a real one and lets a test stall it on purpose: claims that take a while
 * (a slow network to the store), renewals that fail (an owner cut off from the store, so its
 * lease runs out while its handler still works), completions that fail. Everything else goes
 * straight to the wrapped store, so what is stored is real.
 */
import type { IdempotencyStore } from '../../src/vocabulary/index.js';

export interface ControlledStore extends IdempotencyStore {
  /** Milliseconds every claim waits before it reaches the wrapped store. */
  claimDelayMs: number;
  /** While true, every renewal rejects, as a store the owner cannot reach would. */
  renewalsFail: boolean;
  /** While true, every completion rejects. */
  completionsFail: boolean;
  /**
   * How many completions to apply and then reject, as when the store did the write but its reply
   * was lost (a timeout, a cut connection).
   */
  completionRepliesToLose: number;
  /** Claims that reached the wrapped store. */
  claims: number;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export function controlledStore(inner: IdempotencyStore): ControlledStore {
  const store: ControlledStore = {
    claimDelayMs: 0,
    renewalsFail: false,
    completionsFail: false,
    completionRepliesToLose: 0,
    claims: 0,
    async claim(input) {
      if (store.claimDelayMs > 0) await sleep(store.claimDelayMs);
      store.claims++;
      return inner.claim(input);
    },
    async complete(key, token, response, ttlMs) {
      if (store.completionsFail) throw new Error('store unreachable at completion');
      const result = await inner.complete(key, token, response, ttlMs);
      if (store.completionRepliesToLose > 0) {
        store.completionRepliesToLose--;
        throw new Error('the reply to a completion was lost');
      }
      return result;
    },
    release: (key, token, ttlMs) => inner.release(key, token, ttlMs),
    renew(key, token, leaseMs) {
      if (store.renewalsFail) return Promise.reject(new Error('store unreachable for renewal'));
      return inner.renew(key, token, leaseMs);
    },
    saveStep: (key, token, name, value) => inner.saveStep(key, token, name, value),
  };
  return store;
}
