/** Headers that describe one connection, not the message, so they are never stored or forwarded (RFC 9110 §7.6.1). */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'transfer-encoding',
  'te',
  'trailer',
  'upgrade',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
]);

/** The replay marker: stripped from stored responses so a handler cannot forge it. */
export const REPLAYED_HEADER = 'idempotent-replayed';

/** Default headers left out of stored responses besides the hop-by-hop ones. */
export const DEFAULT_EXCLUDED_HEADERS = ['set-cookie', 'date'] as const;

/** Builds the predicate that says which response headers are stored. */
export function storedHeaderFilter(exclude: readonly string[]): (name: string) => boolean {
  const excluded = new Set(exclude.map((name) => name.toLowerCase()));
  return (name) => !HOP_BY_HOP.has(name) && !excluded.has(name) && name !== REPLAYED_HEADER;
}
