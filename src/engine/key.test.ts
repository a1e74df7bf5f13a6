import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIdempotencyKey } from './key.js';

describe('parseIdempotencyKey', () => {
  it.each([
    ['abc', 'abc'],
    ['  abc  ', 'abc'],
    ['"abc"', 'abc'],
    ['"a b"', 'a b'],
    ['"a\\"b"', 'a"b'],
    ['"a\\\\b"', 'a\\b'],
    ['8e03978e-40d5-43e8-bc93-6894a57f9324', '8e03978e-40d5-43e8-bc93-6894a57f9324'],
  ])('accepts %j as %j', (raw, key) => {
    expect(parseIdempotencyKey(raw, 255)).toBe(key);
  });

  it.each([
    ['', /empty/],
    ['""', /empty/],
    ['a b', /visible ASCII/],
    ['a,b', /without commas/],
    ['"abc', /closing quote/],
    ['"abc"x', /after its closing quote/],
    ['"a\\nb"', /invalid escape/],
    ['"é"', /printable ASCII/],
    ['ключ', /visible ASCII/],
    ['x'.repeat(256), /256 characters long; at most 255/],
  ])('rejects %j with a message saying why', (raw, message) => {
    expect(() => parseIdempotencyKey(raw, 255)).toThrow(message);
  });

  it('accepts every visible-ASCII token up to the limit and returns it unchanged', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[\x21-\x2b\x2d-\x7e]{1,64}$/), (key) => {
        fc.pre(!key.startsWith('"'));
        expect(parseIdempotencyKey(key, 64)).toBe(key);
      }),
    );
  });

  it('round-trips any printable string through Structured Field quoting', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[\x20-\x7e]{1,64}$/), (key) => {
        const quoted = `"${key.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
        expect(parseIdempotencyKey(quoted, 64)).toBe(key);
      }),
    );
  });
});
