import { describe, expect, it } from 'vitest';
import { parseDuration, retryAfterSeconds } from './duration.js';

describe('parseDuration', () => {
  it.each([
    [250, 250],
    ['500ms', 500],
    ['30s', 30_000],
    ['1.5s', 1_500],
    ['5m', 300_000],
    ['24h', 86_400_000],
    ['7d', 604_800_000],
  ] as const)('reads %j as %i ms', (value, ms) => {
    expect(parseDuration(value, 'ttl')).toBe(ms);
  });

  it.each([0, -5, Number.NaN, Number.POSITIVE_INFINITY, '10', '10 minutes', '', 'abc'])(
    'rejects %j naming the option',
    (value) => {
      expect(() => parseDuration(value as never, 'lease')).toThrow(/^lease: /);
    },
  );
});

describe('retryAfterSeconds', () => {
  it('rounds up to whole seconds, at least 1', () => {
    expect(retryAfterSeconds(1)).toBe('1');
    expect(retryAfterSeconds(1_000)).toBe('1');
    expect(retryAfterSeconds(1_001)).toBe('2');
    expect(retryAfterSeconds(0)).toBe('1');
  });
});
