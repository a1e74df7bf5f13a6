import { createHash } from 'node:crypto';
import type { IdempotencyRequest, ParsedBody } from './types.js';

/**
 * The default request fingerprint: SHA-256 over the method, the path, the query with its
 * parameters sorted, the body (JSON canonicalised so key order does not matter, anything else as
 * raw bytes) and a hash of the `Authorization` header, so a key never replays one caller's
 * response to another.
 *
 * @example
 * ```ts
 * const fp = defaultFingerprint(request, new TextEncoder().encode('{"b":1,"a":2}'));
 * ```
 */
export function defaultFingerprint(request: IdempotencyRequest, body: Uint8Array | ParsedBody | null): string {
  const queryAt = request.url.indexOf('?');
  const path = queryAt === -1 ? request.url : request.url.slice(0, queryAt);
  const query = queryAt === -1 ? '' : sortedQuery(request.url.slice(queryAt + 1));
  const authorization = request.header('authorization');
  const hash = createHash('sha256');
  // Length-prefixed fields: no two different requests concatenate to the same input.
  field(hash, request.method);
  field(hash, path);
  field(hash, query);
  field(hash, authorization === undefined ? '' : createHash('sha256').update(authorization).digest('base64url'));
  const canonical = canonicalBody(request, body);
  if (typeof canonical === 'string') field(hash, `json:${canonical}`);
  else hash.update(`raw:${canonical.length}:`).update(canonical);
  return hash.digest('base64url');
}

/**
 * The key under which a store keeps a record: a hash of scope and key, so user input never
 * becomes a raw store key and keys of two scopes never meet.
 */
export function storeKeyFor(key: string, scope: string | undefined): string {
  const hash = createHash('sha256');
  if (scope !== undefined) field(hash, scope);
  else hash.update('-');
  return hash.update(key).digest('base64url');
}

/**
 * JSON with object keys sorted at every level, so `{"a":1,"b":2}` and `{"b":2,"a":1}` agree.
 * Throws RangeError on nesting deeper than the stack allows; callers fall back to raw bytes.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value))
    return `[${value.map((item) => canonicalJson(item === undefined ? null : item)).join(',')}]`;
  const keys = Object.keys(value).sort();
  const parts: string[] = [];
  for (const key of keys) {
    const item = (value as Record<string, unknown>)[key];
    if (item === undefined || typeof item === 'function') continue;
    parts.push(`${JSON.stringify(key)}:${canonicalJson(item)}`);
  }
  return `{${parts.join(',')}}`;
}

function field(hash: ReturnType<typeof createHash>, value: string): void {
  hash.update(`${value.length}:${value};`);
}

function sortedQuery(query: string): string {
  if (query === '') return '';
  const parts = query.split('&');
  return parts.length === 1 ? query : parts.sort().join('&');
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\b/i;
const decoder = new TextDecoder('utf-8', { fatal: true });

function canonicalBody(request: IdempotencyRequest, body: Uint8Array | ParsedBody | null): string | Uint8Array {
  if (body === null) return new Uint8Array();
  try {
    if (!(body instanceof Uint8Array)) return canonicalJson(body.parsed);
    if (JSON_TYPE.test(request.header('content-type') ?? '') && body.length > 0) {
      return canonicalJson(JSON.parse(decoder.decode(body)));
    }
  } catch {
    // Broken JSON or JSON nested past the stack: fingerprint the bytes as they came; the handler decides what to answer.
  }
  return body instanceof Uint8Array ? body : new TextEncoder().encode(String(body.parsed));
}
