import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, defaultFingerprint, storeKeyFor } from './fingerprint.js';
import type { IdempotencyRequest } from './types.js';

function request(url: string, headers: Record<string, string> = {}, method = 'POST'): IdempotencyRequest {
  return { method, url, header: (name) => headers[name], body: async () => null };
}
const json = { 'content-type': 'application/json' };
const bytes = (text: string) => new TextEncoder().encode(text);

describe('canonicalJson', () => {
  it('sorts keys at every level and keeps array order', () => {
    expect(canonicalJson({ b: [3, { z: 1, a: 2 }], a: null })).toBe('{"a":null,"b":[3,{"a":2,"z":1}]}');
  });

  it('gives the same text for any key order of the same value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (value) => {
        const shuffled = JSON.parse(
          JSON.stringify(value, (_k, v) =>
            v && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse()) : v,
          ),
        );
        expect(canonicalJson(shuffled)).toBe(canonicalJson(value));
        expect(JSON.parse(canonicalJson(value))).toEqual(JSON.parse(JSON.stringify(value)));
      }),
    );
  });

  it('writes every key and string exactly as JSON.stringify quotes it, keys sorted', () => {
    // Every UTF-16 unit, so quotes, backslashes, controls and lone surrogates all meet the quoting.
    // Up to 80 units: strings up to 32 are scanned by a loop, longer ones by a regular expression.
    const anyText = fc.string({
      unit: fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code)),
      maxLength: 80,
    });
    // The plain definition, with JSON.stringify for every scalar (an object would put integer-like keys first).
    const reference = (value: unknown): string => {
      if (Array.isArray(value)) return `[${value.map(reference).join(',')}]`;
      if (value === null || typeof value !== 'object') return JSON.stringify(value);
      const entries = Object.keys(value).sort();
      return `{${entries.map((key) => `${JSON.stringify(key)}:${reference((value as Record<string, unknown>)[key])}`).join(',')}}`;
    };
    fc.assert(
      fc.property(
        fc.jsonValue({ stringUnit: 'binary' }),
        // Up to 40 keys: objects of a few keys are sorted by the writer's own loop, larger ones by sort().
        fc.dictionary(anyText, anyText, { maxKeys: 40 }),
        (value, strings) => {
          expect(canonicalJson(value)).toBe(reference(value));
          expect(canonicalJson(strings)).toBe(reference(strings));
        },
      ),
    );
  });

  it('quotes each character JSON.stringify escapes, in short and long strings alike', () => {
    for (const special of ['"', '\\', '\u0000', '\u001f', '\ud800', '\udfff', '\ud83d\ude00']) {
      for (const length of [0, 5, 31, 32, 33, 200]) {
        const text = `${'a'.repeat(length)}${special}${'b'.repeat(length)}`;
        expect(canonicalJson(text)).toBe(JSON.stringify(text));
        expect(canonicalJson({ [text]: text })).toBe(`{${JSON.stringify(text)}:${JSON.stringify(text)}}`);
      }
    }
    expect(canonicalJson('a'.repeat(32))).toBe(`"${'a'.repeat(32)}"`);
  });
});

describe('defaultFingerprint', () => {
  it('is stable for the same request and differs for each part that differs', () => {
    const base = defaultFingerprint(request('/p?a=1', { ...json, authorization: 'A' }), bytes('{"x":1}'));
    expect(defaultFingerprint(request('/p?a=1', { ...json, authorization: 'A' }), bytes('{"x":1}'))).toBe(base);
    const variants = [
      defaultFingerprint(request('/q?a=1', { ...json, authorization: 'A' }), bytes('{"x":1}')),
      defaultFingerprint(request('/p?a=2', { ...json, authorization: 'A' }), bytes('{"x":1}')),
      defaultFingerprint(request('/p?a=1', { ...json, authorization: 'B' }), bytes('{"x":1}')),
      defaultFingerprint(request('/p?a=1', { ...json }), bytes('{"x":1}')),
      defaultFingerprint(request('/p?a=1', { ...json, authorization: 'A' }, 'PATCH'), bytes('{"x":1}')),
      defaultFingerprint(request('/p?a=1', { ...json, authorization: 'A' }), bytes('{"x":2}')),
      defaultFingerprint(request('/p?a=1', { ...json, authorization: 'A' }), null),
    ];
    expect(new Set([base, ...variants]).size).toBe(variants.length + 1);
  });

  it('agrees for raw JSON bytes and the same body already parsed', () => {
    const raw = defaultFingerprint(request('/p', json), bytes('{"b":2,"a":1}'));
    expect(defaultFingerprint(request('/p', json), { parsed: { a: 1, b: 2 } })).toBe(raw);
  });

  it('treats non-JSON bodies as raw bytes', () => {
    const text = { 'content-type': 'text/plain' };
    expect(defaultFingerprint(request('/p', text), bytes('{"b":2,"a":1}'))).not.toBe(
      defaultFingerprint(request('/p', text), bytes('{"a":1,"b":2}')),
    );
  });

  it('does not blow up on JSON nested deeper than the stack', () => {
    const deep = `${'['.repeat(200_000)}${']'.repeat(200_000)}`;
    expect(defaultFingerprint(request('/p', json), bytes(deep))).toMatch(/^[\w-]{43}$/);
  });

  // Found by the fuzz tests (test/fuzz): a body nested past the stack and parsed by a framework
  // (Express after express.json(), Fastify) threw out of the fingerprint (a 500 of idempo's own),
  // and a deep object fell back to String(value), '[object Object]', so two different deep
  // bodies shared one fingerprint and a retry of one replayed the other's response.
  it('fingerprints a deep body parsed by a framework as its bytes, and two different ones apart', () => {
    const depth = 50_000;
    const deepArray = `${'['.repeat(depth)}1${']'.repeat(depth)}`;
    const deepObject = (leaf: number) => `${'{"a":'.repeat(depth)}${leaf}${'}'.repeat(depth)}`;
    const parsed = (text: string) => ({ parsed: JSON.parse(text) as unknown });
    const r = request('/p', json);
    expect(defaultFingerprint(r, parsed(deepArray))).toBe(defaultFingerprint(r, bytes(deepArray)));
    expect(defaultFingerprint(r, parsed(deepObject(1)))).toBe(defaultFingerprint(r, bytes(deepObject(1))));
    expect(defaultFingerprint(r, parsed(deepObject(1)))).not.toBe(defaultFingerprint(r, parsed(deepObject(2))));
  });

  it('writes any depth as the recursive writer would, keys sorted', () => {
    let value: unknown = { z: [1, undefined, 'x'], a: true };
    for (let i = 0; i < 30_000; i++) value = i % 2 === 0 ? [value, null] : { k: value, b: 1 };
    let expected = '{"a":true,"z":[1,null,"x"]}';
    for (let i = 0; i < 30_000; i++) expected = i % 2 === 0 ? `[${expected},null]` : `{"b":1,"k":${expected}}`;
    expect(canonicalJson(value)).toBe(expected);
  });

  it("tells bodies apart by their big numbers (a big-number JSON parser's values)", () => {
    const r = request('/p', json);
    expect(defaultFingerprint(r, { parsed: { amount: 10n ** 30n } })).not.toBe(
      defaultFingerprint(r, { parsed: { amount: 10n ** 30n + 1n } }),
    );
  });

  // Found by the fuzz tests: Fastify with a catch-all `parseAs: 'buffer'` parser handed a
  // `+json` body over as a Buffer, fingerprinted as if it were a JSON object of byte indexes.
  it('fingerprints a parsed body that is bytes as those bytes', () => {
    const r = request('/p', { 'content-type': 'application/merge-patch+json' });
    const text = '{"b":1,"a":2}';
    expect(defaultFingerprint(r, { parsed: Buffer.from(text) })).toBe(defaultFingerprint(r, bytes(text)));
  });

  // Found by the fuzz tests: a JSON body with invalid UTF-8 was fingerprinted as raw bytes by the
  // engine and node:http, but as its parsed value (U+FFFD in place of the bad bytes) by Express
  // after express.json() and Fastify, so one request had two fingerprints.
  it('decodes a JSON body with invalid UTF-8 as the JSON parsers of the frameworks do', () => {
    const r = request('/p', json);
    const raw = new Uint8Array([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xff, 0x74, 0x22, 0x7d]); // {"a":"\xfft"}
    expect(defaultFingerprint(r, raw)).toBe(defaultFingerprint(r, { parsed: { a: '\ufffdt' } }));
  });

  it('never contains the Authorization value', () => {
    const fp = defaultFingerprint(request('/p', { authorization: 'Bearer secret' }), null);
    expect(fp).not.toContain('secret');
  });
});

describe('storeKeyFor', () => {
  it('separates scopes and hides the key', () => {
    expect(storeKeyFor('k', 'a')).not.toBe(storeKeyFor('k', 'b'));
    expect(storeKeyFor('k', undefined)).not.toBe(storeKeyFor('k', ''));
    expect(storeKeyFor('ab', 'c')).not.toBe(storeKeyFor('b', 'ca'));
    expect(storeKeyFor('my-key', undefined)).not.toContain('my-key');
  });
});
