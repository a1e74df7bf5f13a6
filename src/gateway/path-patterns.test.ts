import { describe, expect, it } from 'vitest';
import { compilePathPatterns } from './path-patterns.js';

describe('compilePathPatterns', () => {
  const matches = compilePathPatterns(['/payments', '/orders/*/items', '/admin/**']);

  it.each(['/payments', '/payments/', '/orders/o1/items', '/admin/x', '/admin/x/y/z'])('matches %s', (path) => {
    expect(matches(path)).toBe(true);
  });

  it.each(['/payments/p1', '/paymentsX', '/orders/items', '/orders/a/b/items', '/other', '/Payments'])(
    'does not match %s',
    (path) => {
      expect(matches(path)).toBe(false);
    },
  );

  it('treats regex characters literally', () => {
    expect(compilePathPatterns(['/a.b'])('/aXb')).toBe(false);
  });

  it('matches nothing without patterns', () => {
    expect(compilePathPatterns([])('/payments')).toBe(false);
  });

  it('rejects a pattern without a leading slash', () => {
    expect(() => compilePathPatterns(['payments'])).toThrow(/start with '\/'/);
  });
});
