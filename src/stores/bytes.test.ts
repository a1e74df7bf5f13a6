import { describe, expect, it } from 'vitest';
import { asBuffer } from './bytes.js';

describe('asBuffer', () => {
  it('returns a Buffer as it is', () => {
    const buffer = Buffer.from('abc');
    expect(asBuffer(buffer)).toBe(buffer);
  });

  it('gives a plain view its own bytes as a Buffer over the same memory, not a copy', () => {
    const backing = Uint8Array.from([1, 2, 3, 4, 5, 6]);
    const view = backing.subarray(2, 5);
    const buffer = asBuffer(view);
    expect(Buffer.isBuffer(buffer)).toBe(true);
    expect([...buffer]).toEqual([3, 4, 5]);
    backing[3] = 40;
    expect(buffer[1]).toBe(40);
    expect(buffer.equals(Buffer.from([3, 40, 5]))).toBe(true);
  });

  it('keeps an empty view empty', () => {
    expect(asBuffer(new Uint8Array(8).subarray(8)).length).toBe(0);
  });
});
