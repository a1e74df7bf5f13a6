/**
 * `Retry-After` (RFC 9110 §10.2.3): either whole seconds or an HTTP date.
 *
 * @module
 */

const SECONDS = /^\d+$/;

/**
 * How long a `Retry-After` value asks the client to wait, in milliseconds, or `undefined` when
 * the header is absent or unreadable (the caller then falls back to its backoff). A date in the
 * past means "now" (0).
 *
 * @example
 * ```ts
 * parseRetryAfter('2'); // 2000
 * parseRetryAfter('Wed, 21 Oct 2015 07:28:00 GMT', Date.parse('Wed, 21 Oct 2015 07:27:58 GMT')); // 2000
 * ```
 */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (value === null || value === undefined) return undefined;
  const trimmed = value.trim();
  if (trimmed === '') return undefined;
  if (SECONDS.test(trimmed)) return Number(trimmed) * 1000;
  // Date.parse accepts many shapes; requiring a letter keeps bare or signed numbers ("-1", "1.5") out.
  if (!/[a-z]/i.test(trimmed)) return undefined;
  const at = Date.parse(trimmed);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}
