import type { IdempotencyContext } from './types.js';

const never = new AbortController().signal;

/**
 * The context a handler gets when idempo does not protect the request (method not covered, no
 * key, or fail-open): steps simply run.
 */
export function unprotectedContext(): IdempotencyContext {
  return {
    key: '',
    storeKey: '',
    token: 0,
    recovered: false,
    signal: never,
    step: async (_name, fn) => fn(),
  };
}
