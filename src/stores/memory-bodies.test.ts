import { describe, expect, it } from 'vitest';
import { bodyKeeper } from './memory-bodies.js';

describe('bodyKeeper', () => {
  it('returns a copy with the same bytes, which later changes to the source leave alone', () => {
    const keep = bodyKeeper();
    const source = Uint8Array.from([0x00, 0x80, 0xff, 0x41]);
    const copy = keep(source);
    source.fill(7);
    expect([...copy]).toEqual([0x00, 0x80, 0xff, 0x41]);
    expect(Buffer.isBuffer(copy)).toBe(true);
  });

  it('packs small bodies side by side in a buffer of its own, not the one they were cut from', () => {
    const keep = bodyKeeper();
    const slab = Buffer.from('aaaabbbbcccc');
    const first = keep(slab.subarray(0, 4));
    const second = keep(slab.subarray(4, 8));
    expect(first.buffer).toBe(second.buffer);
    expect(first.buffer).not.toBe(slab.buffer);
    expect(second.byteOffset).toBe(first.byteOffset + 4);
    expect([first.toString(), second.toString()]).toEqual(['aaaa', 'bbbb']);
  });

  it('starts a new chunk when a body does not fit, and every body stays intact', () => {
    const keep = bodyKeeper();
    const sources = Array.from({ length: 600 }, (_, i) =>
      Buffer.from(`{"id":"pay_${i}","note":"${'x'.repeat(i % 97)}"}`),
    );
    const copies = sources.map((source) => keep(source));
    expect(new Set(copies.map((copy) => copy.buffer)).size).toBeGreaterThan(1);
    for (const [i, copy] of copies.entries()) expect(copy.equals(sources[i] as Buffer)).toBe(true);
  });

  it('gives a body over half a chunk a buffer of exactly its size', () => {
    const keep = bodyKeeper();
    const large = Buffer.alloc(5000, 0x61);
    const copy = keep(large);
    expect(copy.equals(large)).toBe(true);
    expect(copy.buffer).not.toBe(large.buffer);
    expect(copy.buffer.byteLength).toBe(5000);
  });

  it('keeps an empty body as an empty buffer', () => {
    expect(bodyKeeper()(new Uint8Array()).length).toBe(0);
  });
});
