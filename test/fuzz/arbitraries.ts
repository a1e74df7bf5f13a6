/**
 * Generators of the inputs the internet sends an HTTP API, for the fuzz tests: methods, keys,
 * header sets, targets, bodies of any bytes (JSON, broken JSON, huge and deeply nested JSON,
 * invalid UTF-8) and engine option combinations.
 */
import fc from 'fast-check';
import type { IdempotencyOptions } from '../../src/engine/types.js';
import type { Duration } from '../../src/vocabulary/duration.js';

const encoder = new TextEncoder();

/** Methods a web `Request` accepts (a token; not CONNECT, TRACE or TRACK). */
export const method: fc.Arbitrary<string> = fc
  .oneof(
    { weight: 6, arbitrary: fc.constantFrom('POST', 'PATCH', 'PUT', 'DELETE', 'GET', 'HEAD', 'OPTIONS') },
    { weight: 1, arbitrary: fc.stringMatching(/^[A-Z][A-Z-]{0,11}$/) },
  )
  .filter((m) => m !== 'CONNECT' && m !== 'TRACE' && m !== 'TRACK');

/** A header value a client can send: any byte but NUL, CR and LF (latin1 text), outer whitespace trimmed. */
export const headerValue = (maxLength = 64): fc.Arbitrary<string> =>
  fc
    .string({
      unit: fc.oneof(
        { weight: 8, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)) },
        { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)) },
        { weight: 1, arbitrary: fc.constant('\t') },
      ),
      maxLength,
    })
    .map((value) => value.trim());

/** An Idempotency-Key as clients send it: valid tokens, UUIDs, SF strings, escapes, anything else. */
export const key: fc.Arbitrary<string> = fc.oneof(
  { weight: 4, arbitrary: fc.stringMatching(/^[!-+\--~]{1,40}$/) },
  { weight: 2, arbitrary: fc.uuid() },
  { weight: 2, arbitrary: fc.stringMatching(/^"[ !#-[\]-~]{0,30}"$/) },
  { weight: 1, arbitrary: fc.stringMatching(/^"([ -~]|\\["\\a])*"?[ -~]{0,3}$/) },
  { weight: 2, arbitrary: headerValue(80) },
  { weight: 1, arbitrary: fc.stringMatching(/^[a-z0-9]{250,300}$/) },
);

/** A path and query a web `Request` keeps as sent. */
export const target: fc.Arbitrary<string> = fc
  .tuple(
    fc.webPath(),
    fc.option(fc.webQueryParameters(), { nil: undefined }),
    fc.option(fc.array(fc.stringMatching(/^[a-z]{1,3}=[a-z0-9]{0,3}$/), { maxLength: 4 }), { nil: undefined }),
  )
  .map(([path, query, pairs]) => {
    const base = path.startsWith('/') ? path : `/${path}`;
    const search = pairs !== undefined && pairs.length > 0 ? pairs.join('&') : query;
    return search === undefined || search === '' ? base : `${base}?${search}`;
  });

export const contentType: fc.Arbitrary<string | undefined> = fc.oneof(
  fc.constantFrom(
    'application/json',
    'application/json; charset=utf-8',
    'application/merge-patch+json',
    'APPLICATION/JSON',
    'text/plain',
    'application/octet-stream',
    'application/x-www-form-urlencoded',
  ),
  fc.constant(undefined),
  headerValue(40),
);

/** JSON nested `depth` deep: `[[[…]]]` or `{"a":{"a":…}}`, past any recursion limit when deep enough. */
export const nestedJson: fc.Arbitrary<string> = fc
  .tuple(fc.integer({ min: 1, max: 20_000 }), fc.boolean())
  .map(([depth, arrays]) =>
    arrays ? `${'['.repeat(depth)}1${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`,
  );

/** Broken JSON: a JSON text cut short, with a byte changed, or with trailing garbage. */
export const brokenJson: fc.Arbitrary<string> = fc
  .tuple(fc.json(), fc.nat(), fc.constantFrom('cut', 'flip', 'trail', 'quote'))
  .map(([text, at, how]) => {
    const i = text.length === 0 ? 0 : at % text.length;
    if (how === 'cut') return text.slice(0, i);
    if (how === 'flip') return `${text.slice(0, i)}}${text.slice(i + 1)}`;
    if (how === 'trail') return `${text},`;
    return `"${text}`;
  });

/** A body: null, any bytes, JSON, broken JSON, nested or huge JSON, JSON strings with invalid UTF-8. */
export const body: fc.Arbitrary<Uint8Array | null> = fc.oneof(
  { weight: 2, arbitrary: fc.constant(null) },
  { weight: 4, arbitrary: fc.uint8Array({ maxLength: 512 }) },
  { weight: 5, arbitrary: fc.json({ maxDepth: 4 }).map((text) => encoder.encode(text)) },
  { weight: 2, arbitrary: brokenJson.map((text) => encoder.encode(text)) },
  { weight: 1, arbitrary: nestedJson.map((text) => encoder.encode(text)) },
  {
    weight: 1,
    arbitrary: fc
      .integer({ min: 1_000, max: 40_000 })
      .map((n) => encoder.encode(JSON.stringify(Array.from({ length: n }, (_, i) => ({ i, s: 'x'.repeat(i % 7) }))))),
  },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.uint8Array({ minLength: 1, maxLength: 8 }), fc.constantFrom([0xff], [0xc3], [0xed, 0xa0, 0x80], [0xfe]))
      .map(
        ([bytes, invalid]) =>
          new Uint8Array([
            0x7b,
            0x22,
            0x61,
            0x22,
            0x3a,
            0x22,
            ...invalid,
            ...bytes.filter((b) => b !== 0x22 && b !== 0x5c && b >= 0x20),
            0x22,
            0x7d,
          ]),
      ),
  },
);

/** Extra request headers: random names and values, and the ones the fingerprint reads. */
export const extraHeaders: fc.Arbitrary<[string, string][]> = fc.array(
  fc.tuple(
    fc.oneof(
      fc.constantFrom('authorization', 'x-tenant', 'accept', 'x-request-id'),
      fc.stringMatching(/^x-[a-z0-9-]{1,20}$/),
    ),
    headerValue(60),
  ),
  { maxLength: 6 },
);

/** Option combinations: every engine option that changes what a request gets, each often left out. */
export const options: fc.Arbitrary<Omit<IdempotencyOptions, 'store'>> = fc.record(
  {
    methods: fc.constantFrom(['POST', 'PATCH'], ['POST', 'PUT', 'DELETE', 'PATCH'], ['post'], ['GET', 'POST']),
    required: fc.boolean(),
    header: fc.constantFrom('idempotency-key', 'Idempotency-Key'),
    maxKeyLength: fc.integer({ min: 1, max: 300 }),
    concurrent: fc.constantFrom('reject' as const, 'wait' as const),
    waitTimeout: fc.constantFrom<Duration>(10, '50ms'),
    releaseOn: fc.constantFrom<NonNullable<IdempotencyOptions['releaseOn']>>(['5xx'], [], [409, '5xx'], ['4xx']),
    mismatchStatus: fc.constantFrom(400 as const, 422 as const),
    maxBodyBytes: fc.oneof(fc.integer({ min: 1, max: 2_048 }), fc.constant(1_048_576)),
    maxResponseBytes: fc.integer({ min: 1, max: 4_096 }),
    errorFormat: fc.constantFrom('problem' as const, 'stripe' as const),
    replayHeaders: fc.constantFrom({ exclude: [] as string[] }, { exclude: ['x-a', 'content-type'] }),
  },
  { requiredKeys: [] },
);

/** A generated request, before it is made into a web `Request` or sent over a socket. */
export interface FuzzRequest {
  method: string;
  target: string;
  key: string | undefined;
  contentType: string | undefined;
  headers: [string, string][];
  body: Uint8Array | null;
}

export const request: fc.Arbitrary<FuzzRequest> = fc.record({
  method,
  target,
  key: fc.option(key, { nil: undefined, freq: 6 }),
  contentType,
  headers: extraHeaders,
  body,
});

/** The generated request as a web `Request` (GET and HEAD carry no body, as fetch requires). */
export function toWebRequest(input: FuzzRequest, keyHeader = 'idempotency-key'): Request {
  const headers = new Headers();
  for (const [name, value] of input.headers) headers.append(name, value);
  if (input.contentType !== undefined) headers.set('content-type', input.contentType);
  if (input.key !== undefined) headers.set(keyHeader, input.key);
  const bodyless = input.method === 'GET' || input.method === 'HEAD';
  return new Request(`http://fuzz.test${input.target}`, {
    method: input.method,
    headers,
    ...(bodyless || input.body === null ? {} : { body: input.body as Uint8Array<ArrayBuffer> }),
  });
}
