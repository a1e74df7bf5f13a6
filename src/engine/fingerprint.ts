import { createHash, hash } from 'node:crypto';
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
  // Length-prefixed fields: no two different requests concatenate to the same input.
  const fields =
    field(request.method) +
    field(path) +
    field(query) +
    field(authorization === undefined ? '' : hash('sha256', authorization, 'base64url'));
  const canonical = canonicalBody(request, body);
  // One-shot hash() of one string: about a third of the cost of createHash() and an update() per field.
  if (typeof canonical === 'string') return hash('sha256', fields + field(`json:${canonical}`), 'base64url');
  return createHash('sha256').update(`${fields}raw:${canonical.length}:`).update(canonical).digest('base64url');
}

/**
 * The key under which a store keeps a record: a hash of scope and key, so user input never
 * becomes a raw store key and keys of two scopes never meet.
 */
export function storeKeyFor(key: string, scope: string | undefined): string {
  return hash('sha256', scope === undefined ? `-${key}` : field(scope) + key, 'base64url');
}

/**
 * JSON with object keys sorted at every level, so `{"a":1,"b":2}` and `{"b":2,"a":1}` agree.
 * Any depth: a value nested deeper than the stack allows is written by a loop instead, so a deep
 * body parsed by a framework fingerprints as its bytes do and never as a constant that two
 * different bodies would share.
 *
 * @example
 * ```ts
 * canonicalJson({ b: [1, { d: 1, c: 2 }], a: null }); // '{"a":null,"b":[1,{"c":2,"d":1}]}'
 * ```
 */
export function canonicalJson(value: unknown): string {
  try {
    return canonicalValue(value);
  } catch (error) {
    if (!(error instanceof RangeError) || !isStackOverflow(error)) throw error;
    return canonicalDeep(value);
  }
}

function isStackOverflow(error: RangeError): boolean {
  return /call stack/i.test(error.message);
}

/** The recursive writer: fast, and as deep as the stack. */
function canonicalValue(value: unknown): string {
  // Built by string concatenation, without the intermediate arrays of map() and join(), and
  // quoting plain strings without a call into JSON.stringify: the same output at about a third
  // of the cost of the map/join version.
  switch (typeof value) {
    case 'string':
      return quote(value);
    case 'number':
      return Number.isFinite(value) ? String(value) : 'null';
    case 'boolean':
      return value ? 'true' : 'false';
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ',';
          const item: unknown = value[i];
          // A hole stays empty, as join() renders it; an undefined element is null.
          if (item !== undefined) out += canonicalValue(item);
          else if (i in value) out += 'null';
        }
        return `${out}]`;
      }
      const keys = sortedKeys(value);
      let out = '{';
      let first = true;
      for (let i = 0; i < keys.length; i++) {
        const key = keys[i] as string;
        const item = (value as Record<string, unknown>)[key];
        if (item === undefined || typeof item === 'function') continue;
        out += `${first ? '' : ','}${quote(key)}:${canonicalValue(item)}`;
        first = false;
      }
      return `${out}}`;
    }
    case 'bigint':
      // A big-number JSON parser's value, written as such a parser's stringify writes it. (Were
      // it thrown, as JSON.stringify does, every body holding one would fingerprint alike.)
      return value.toString();
    default:
      // undefined, functions and symbols are null, as in JSON.stringify.
      return JSON.stringify(value) ?? 'null';
  }
}

/** An open array or object of {@link canonicalDeep}: where its next member is. */
type Open =
  | { readonly items: readonly unknown[]; next: number }
  | { readonly object: Record<string, unknown>; readonly keys: string[]; next: number; first: boolean };

/**
 * {@link canonicalValue}'s output for a value of any depth, with a stack of open arrays and
 * objects on the heap instead of the call stack. Only nesting deeper than the stack allows gets
 * here (a hostile or odd body), so it is written for being right, not fast.
 */
function canonicalDeep(root: unknown): string {
  let out = '';
  const open: Open[] = [];
  let value: unknown = root;
  let pending = true;
  for (;;) {
    if (pending) {
      pending = false;
      if (value !== null && typeof value === 'object') {
        if (Array.isArray(value)) {
          out += '[';
          open.push({ items: value, next: 0 });
        } else {
          const keys = sortedKeys(value);
          out += '{';
          open.push({ object: value as Record<string, unknown>, keys, next: 0, first: true });
        }
      } else {
        out += canonicalValue(value);
      }
    }
    const top = open[open.length - 1];
    if (top === undefined) return out;
    if ('items' in top) {
      while (top.next < top.items.length && !pending) {
        const i = top.next++;
        if (i > 0) out += ',';
        const item = top.items[i];
        if (item !== undefined) {
          value = item;
          pending = true;
        } else if (i in top.items) out += 'null';
      }
      if (!pending) {
        out += ']';
        open.pop();
      }
    } else {
      while (top.next < top.keys.length && !pending) {
        const key = top.keys[top.next++] as string;
        const item = top.object[key];
        if (item === undefined || typeof item === 'function') continue;
        out += `${top.first ? '' : ','}${quote(key)}:`;
        top.first = false;
        value = item;
        pending = true;
      }
      if (!pending) {
        out += '}';
        open.pop();
      }
    }
  }
}

/**
 * An object's own enumerable keys in the order `Array.prototype.sort()` gives them (by UTF-16 code
 * units). A body's objects have a few keys, which an insertion sort orders without the calls into
 * `sort()` and its generic comparator.
 */
function sortedKeys(value: object): string[] {
  const keys = Object.keys(value);
  if (keys.length > 16) return keys.sort();
  for (let i = 1; i < keys.length; i++) {
    const key = keys[i] as string;
    let j = i - 1;
    while (j >= 0 && (keys[j] as string) > key) {
      keys[j + 1] = keys[j] as string;
      j--;
    }
    keys[j + 1] = key;
  }
  return keys;
}

/** Characters JSON.stringify escapes: quote, backslash, controls, and (when lone) surrogates. */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching the control characters JSON escapes is the point.
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * A JSON string literal, as JSON.stringify writes it. A string without a character it escapes
 * (nor any surrogate) is written as it is. Most of a body's strings are short: for those a loop
 * is cheaper than calling the regular expression, which is the faster scan of a long one.
 */
function quote(text: string): string {
  if (text.length > 32) return NEEDS_ESCAPE.test(text) ? JSON.stringify(text) : `"${text}"`;
  for (let i = 0; i < text.length; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20 || code === 0x22 || code === 0x5c || (code >= 0xd800 && code <= 0xdfff)) {
      return JSON.stringify(text);
    }
  }
  return `"${text}"`;
}

function field(value: string): string {
  return `${value.length}:${value};`;
}

function sortedQuery(query: string): string {
  if (query === '') return '';
  const parts = query.split('&');
  return parts.length === 1 ? query : parts.sort().join('&');
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\b/i;

/**
 * Whether a `Content-Type` names JSON (`application/json`, `application/*+json`): such a body is
 * fingerprinted as canonical JSON. Adapters that take a framework's parsed body use this very
 * test, so a body fingerprints alike whichever face it came through.
 */
export function isJsonContentType(contentType: string | undefined): boolean {
  return JSON_TYPE.test(contentType ?? '');
}

/**
 * Invalid UTF-8 becomes U+FFFD, as every JSON body parser decodes it (Express's, Fastify's,
 * `Request.json()`): a body fingerprints as the value its handler sees, whichever face it took.
 */
const decoder = new TextDecoder('utf-8');

function canonicalBody(request: IdempotencyRequest, body: Uint8Array | ParsedBody | null): string | Uint8Array {
  if (body === null) return new Uint8Array();
  // A framework parser that kept the bytes (Fastify's `parseAs: 'buffer'` for a `+json` type it
  // has no JSON parser for) handed over bytes, not a JSON value: fingerprint them as bytes.
  if (!(body instanceof Uint8Array) && body.parsed instanceof Uint8Array) body = body.parsed;
  try {
    if (!(body instanceof Uint8Array)) return canonicalJson(body.parsed);
    if (isJsonContentType(request.header('content-type')) && body.length > 0) {
      return canonicalJson(JSON.parse(decoder.decode(body)));
    }
  } catch {
    // Broken JSON (or a parsed value JSON cannot hold, a bigint): fingerprint the bytes as they came; the handler decides what to answer.
  }
  return body instanceof Uint8Array ? body : new TextEncoder().encode(String(body.parsed));
}
