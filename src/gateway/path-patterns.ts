import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/**
 * Compiles path patterns into one predicate: `*` matches one path segment, `**` any number of
 * segments, anything else literally. `/payments/*` matches `/payments/p_1` but not `/payments`.
 *
 * @example
 * ```ts
 * const matches = compilePathPatterns(['/payments', '/orders/**']);
 * matches('/orders/1/items'); // true
 * ```
 */
export function compilePathPatterns(patterns: readonly string[]): (path: string) => boolean {
  if (patterns.length === 0) return () => false;
  const sources = patterns.map((pattern) => {
    if (!pattern.startsWith('/'))
      throw new IdempotencyConfigInvalidError(`--require-key: patterns start with '/', got ${JSON.stringify(pattern)}`);
    const body = pattern
      .split(/(\*\*|\*)/)
      .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]+' : part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')))
      .join('');
    return `(?:${body})`;
  });
  const regex = new RegExp(`^(?:${sources.join('|')})/?$`);
  return (path) => regex.test(path);
}
