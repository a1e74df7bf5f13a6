/**
 * Exponential backoff with full jitter: wait a uniformly random time in `[0, min(limit, delay(n)))`.
 * Full jitter spreads clients that failed at the same moment (a dropped connection, a restart)
 * over the whole window instead of sending them back in lockstep.
 *
 * @module
 */

/** setTimeout fires at once for anything above 2^31 - 1 ms, so no wait may exceed it. */
export const MAX_TIMER = 2 ** 31 - 1;

/** The parts of the resolved options the backoff reads. */
export interface BackoffOptions {
  readonly delay: (retryCount: number) => number;
  readonly backoffLimit: number;
  readonly jitter: boolean | ((delay: number) => number);
}

/**
 * Milliseconds to wait before retry number `retryCount` (1-based) when the server gave no
 * `Retry-After`.
 *
 * @example
 * ```ts
 * backoffDelay(3, { delay: (n) => 100 * 2 ** (n - 1), backoffLimit: 1000, jitter: false }); // 400
 * ```
 */
export function backoffDelay(retryCount: number, options: BackoffOptions, random: () => number = Math.random): number {
  // `|| 0` turns NaN into 0, which Math.max alone would pass on.
  const raw = options.delay(retryCount);
  const capped = Math.min(options.backoffLimit, MAX_TIMER, Math.max(0, raw || 0));
  const { jitter } = options;
  const jittered = jitter === true ? random() * capped : jitter === false ? capped : jitter(capped);
  return Math.round(Math.min(MAX_TIMER, Math.max(0, jittered || 0)));
}
