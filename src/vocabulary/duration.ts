/**
 * Durations as idempo's options take them (`lease`, `ttl`, `waitTimeout`, a store's intervals, the
 * gateway's flags), and `Retry-After` as idempo sends it.
 *
 * @module
 */
import { IdempotencyConfigInvalidError } from './errors.js';

/** A duration: milliseconds as a number, or a string such as `'500ms'`, `'30s'`, `'5m'`, `'24h'`, `'7d'`. */
export type Duration = number | `${number}${'ms' | 's' | 'm' | 'h' | 'd'}`;

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const PATTERN = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/;

/**
 * Converts a {@link Duration} to milliseconds, rejecting anything that is not a positive, finite length.
 *
 * @example
 * ```ts
 * parseDuration('30s'); // 30000
 * parseDuration(250);   // 250
 * ```
 */
export function parseDuration(value: Duration | string, option: string): number {
  let ms: number;
  if (typeof value === 'number') {
    ms = value;
  } else {
    const match = PATTERN.exec(String(value).trim());
    if (!match) {
      throw new IdempotencyConfigInvalidError(
        `${option}: expected milliseconds or a string like '30s' or '24h', got ${JSON.stringify(value)}`,
      );
    }
    ms = Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS];
  }
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new IdempotencyConfigInvalidError(`${option}: must be a positive duration, got ${JSON.stringify(value)}`);
  }
  return Math.round(ms);
}

/** Milliseconds to a `Retry-After` value: whole seconds, at least 1. */
export function retryAfterSeconds(ms: number): string {
  return String(Math.max(1, Math.ceil(ms / 1_000)));
}
