/**
 * A store seen through a watcher: every contract call is reported when it starts and when it
 * ends, with its outcome. Metrics time the calls with it, tracing makes a span of each. The
 * wrapper keeps the contract: it forwards every call as it is, and offers the synchronous
 * `claim`/`complete` of a store that has them for itself, so the memory store keeps its
 * one-turn path when watched.
 *
 * @module
 */
import type {
  ClaimInput,
  ClaimResult,
  FencedResult,
  IdempotencyStore,
  StoredResponse,
  SyncStoreOperations,
} from '../vocabulary/index.js';

/** The store calls a watcher sees: the contract's five, plus waiting for a change. */
export type StoreOperation = 'claim' | 'complete' | 'release' | 'renew' | 'save_step' | 'wait';

/** One call as a watcher sees it: the operation, the scoped hashed key, and the fencing token when it carries one. */
export interface StoreCall {
  readonly operation: StoreOperation;
  readonly key: string;
  readonly token: number | undefined;
  /** The claim's input object: the engine claims again with the same object while a duplicate waits. */
  readonly claim: ClaimInput | undefined;
}

/**
 * Told of each call as it starts; returns what to call when it ends, with the result or, when
 * the store threw, `failed` true and the error. Must not throw.
 */
export type StoreWatcher = (
  call: StoreCall,
) => (result: ClaimResult | FencedResult | undefined, error?: unknown) => void;

/** `store`, with every call reported to `watch`. */
export function watchedStore(store: IdempotencyStore, watch: StoreWatcher): IdempotencyStore {
  async function watched<T extends ClaimResult | FencedResult | undefined>(call: StoreCall, run: () => Promise<T>) {
    const done = watch(call);
    let result: T;
    try {
      result = await run();
    } catch (error) {
      done(undefined, error ?? new Error('store failed'));
      throw error;
    }
    done(result);
    return result;
  }
  const own: Partial<Record<keyof IdempotencyStore, unknown>> = {
    claim: (input: ClaimInput) =>
      watched({ operation: 'claim', key: input.key, token: undefined, claim: input }, () => store.claim(input)),
    complete: (key: string, token: number, response: StoredResponse, ttlMs: number) =>
      watched({ operation: 'complete', key, token, claim: undefined }, () =>
        store.complete(key, token, response, ttlMs),
      ),
    release: (key: string, token: number, ttlMs: number) =>
      watched({ operation: 'release', key, token, claim: undefined }, () => store.release(key, token, ttlMs)),
    renew: (key: string, token: number, leaseMs: number) =>
      watched({ operation: 'renew', key, token, claim: undefined }, () => store.renew(key, token, leaseMs)),
    saveStep: (key: string, token: number, name: string, value: string) =>
      watched({ operation: 'save_step', key, token, claim: undefined }, () => store.saveStep(key, token, name, value)),
  };
  if (store.waitForChange) {
    const wait = store.waitForChange.bind(store);
    own.waitForChange = (key: string, timeoutMs: number) =>
      watched({ operation: 'wait', key, token: undefined, claim: undefined }, () =>
        wait(key, timeoutMs).then(() => undefined),
      );
  }
  // A Proxy over an empty object (a frozen store's own properties could not be answered for otherwise).
  const wrapper: IdempotencyStore = new Proxy({} as IdempotencyStore, {
    get(_target, property) {
      if (Object.hasOwn(own, property)) return own[property as keyof IdempotencyStore];
      const value = Reflect.get(store, property, store);
      // Anything else (close, ping, what a store adds) runs on the store itself, private fields and all.
      return typeof value === 'function' ? value.bind(store) : value;
    },
    has: (_target, property) => Object.hasOwn(own, property) || property in store,
  });
  const sync = store.sync;
  if (sync !== undefined && sync.store === store) {
    own.sync = {
      store: wrapper,
      claim(input: ClaimInput): ClaimResult {
        return watchedNow({ operation: 'claim', key: input.key, token: undefined, claim: input }, () =>
          sync.claim(input),
        );
      },
      complete(key: string, token: number, response: StoredResponse, ttlMs: number): FencedResult {
        return watchedNow({ operation: 'complete', key, token, claim: undefined }, () =>
          sync.complete(key, token, response, ttlMs),
        );
      },
    } satisfies SyncStoreOperations;
  }
  function watchedNow<T extends ClaimResult | FencedResult>(call: StoreCall, run: () => T): T {
    const done = watch(call);
    let result: T;
    try {
      result = run();
    } catch (error) {
      done(undefined, error ?? new Error('store failed'));
      throw error;
    }
    done(result);
    return result;
  }
  return wrapper;
}

/** What a call's result is called in metrics and spans: a claim's status, `ok`/`stale`, or `error`. */
export function resultOf(result: ClaimResult | FencedResult | undefined, error: unknown): string {
  if (error !== undefined) return 'error';
  if (result === undefined) return 'ok';
  return typeof result === 'string' ? result : result.status;
}
