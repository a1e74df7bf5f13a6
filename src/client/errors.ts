/**
 * The client's one error: a call that kept failing with network errors until its retries ran out.
 *
 * @module
 */

import { IdempotencyError, type IdempotencyErrorOptions, PROBLEM_BASE } from '../engine/errors.js';

/** Options of {@link IdempotencyRetriesExhaustedError}. */
export interface IdempotencyRetriesExhaustedErrorOptions extends IdempotencyErrorOptions {
  /** Attempts made, the first one included. */
  attempts: number;
  /** The key every attempt carried, if any. */
  idempotencyKey: string | undefined;
}

/**
 * Every attempt of a call failed without a response (network error, per-attempt timeout) and
 * the client stopped: `retry.limit`, `retry.maxRetryTime` or `shouldRetry` said so. `cause` is the
 * last attempt's error. The request may or may not have run on the server; sending it again
 * later with the same `idempotencyKey` is safe and tells you which.
 *
 * A call that ends on a retryable *status* is not an error: the last response is returned, as
 * `fetch` would. An abort rejects with the signal's reason, as `fetch` would.
 *
 * @example
 * ```ts
 * try {
 *   await idempotentFetch(url, { method: 'POST', body });
 * } catch (err) {
 *   if (err instanceof IdempotencyRetriesExhaustedError) queue.later(url, body, err.idempotencyKey);
 *   else throw err;
 * }
 * ```
 */
export class IdempotencyRetriesExhaustedError extends IdempotencyError {
  override readonly code = 'IDEMPO_RETRIES_EXHAUSTED';
  /** 503: when a server relays this failure, the client behind it may try again later. */
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}retries-exhausted`;
  override readonly title = 'Retries exhausted';
  /** Attempts made, the first one included. */
  readonly attempts: number;
  /** The key every attempt carried; resend with it to learn the outcome without running twice. */
  readonly idempotencyKey: string | undefined;

  constructor(message: string, options: IdempotencyRetriesExhaustedErrorOptions) {
    super(message, options);
    this.attempts = options.attempts;
    this.idempotencyKey = options.idempotencyKey;
  }
}
