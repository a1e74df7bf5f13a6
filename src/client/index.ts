/**
 * `idempo/client`: a `fetch` wrapper that sends an `Idempotency-Key` with every POST and PATCH and
 * retries safely. No Node-only imports: it runs on Node's global fetch, undici's, and in browsers.
 *
 * @example
 * ```ts
 * import { createIdempotentFetch } from 'idempo/client';
 *
 * const idempotentFetch = createIdempotentFetch();
 * await idempotentFetch('https://api.example.com/payments', { method: 'POST', body: JSON.stringify({ amount: 1250 }) });
 * ```
 *
 * @module
 */

export { IdempotencyRetriesExhaustedError, type IdempotencyRetriesExhaustedErrorOptions } from '../vocabulary/index.js';
export { createIdempotentFetch } from './idempotent-fetch.js';
export {
  CLIENT_DEFAULTS,
  type FailedAttemptContext,
  type FetchLike,
  type IdempotentFetch,
  type IdempotentFetchOptions,
  type RetryContext,
  type RetryOptions,
  type SigningOptions,
} from './options.js';
export { parseRetryAfter } from './retry-after.js';
