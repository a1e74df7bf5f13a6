import { describe, expect, it } from 'vitest';
import { backoffDelay, MAX_TIMER } from './backoff.js';

const exponential = (retryCount: number) => 100 * 2 ** (retryCount - 1);

describe('backoffDelay', () => {
  it('grows exponentially without jitter', () => {
    const options = { delay: exponential, backoffLimit: Number.POSITIVE_INFINITY, jitter: false };
    expect([1, 2, 3, 4].map((n) => backoffDelay(n, options))).toEqual([100, 200, 400, 800]);
  });

  it('is capped by backoffLimit, and by the largest timer a runtime can set', () => {
    expect(backoffDelay(10, { delay: exponential, backoffLimit: 1000, jitter: false })).toBe(1000);
    const unbounded = { delay: () => Number.POSITIVE_INFINITY, backoffLimit: Number.POSITIVE_INFINITY, jitter: false };
    expect(backoffDelay(1, unbounded)).toBe(MAX_TIMER);
  });

  it('draws full jitter uniformly between 0 and the capped backoff', () => {
    const options = { delay: exponential, backoffLimit: 300, jitter: true };
    expect(backoffDelay(3, options, () => 0)).toBe(0);
    expect(backoffDelay(3, options, () => 0.5)).toBe(150);
    expect(backoffDelay(3, options, () => 0.999)).toBe(300);
  });

  it('lets a function map the delay, and never returns a negative or NaN wait', () => {
    expect(backoffDelay(2, { delay: exponential, backoffLimit: 10_000, jitter: (d) => d + 5 })).toBe(205);
    expect(backoffDelay(1, { delay: () => -5, backoffLimit: 10_000, jitter: false })).toBe(0);
    expect(backoffDelay(1, { delay: () => Number.NaN, backoffLimit: 10_000, jitter: false })).toBe(0);
    expect(backoffDelay(1, { delay: exponential, backoffLimit: 10_000, jitter: () => Number.NaN })).toBe(0);
  });
});
