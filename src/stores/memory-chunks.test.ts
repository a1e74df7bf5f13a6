import { describe, expect, it } from 'vitest';
import { chunkAllocator } from './memory-chunks.js';

describe('chunkAllocator', () => {
  it('packs small allocations side by side in one buffer of its own', () => {
    const allocate = chunkAllocator();
    const first = allocate(4);
    const second = allocate(4);
    expect(Buffer.isBuffer(first)).toBe(true);
    expect(first.buffer).toBe(second.buffer);
    expect(second.byteOffset).toBe(first.byteOffset + 4);
    first.write('aaaa');
    second.write('bbbb');
    expect([first.toString(), second.toString()]).toEqual(['aaaa', 'bbbb']);
  });

  it('starts a new chunk when an allocation does not fit, and earlier bytes stay intact', () => {
    const allocate = chunkAllocator();
    const sources = Array.from({ length: 3000 }, (_, i) =>
      Buffer.from(`{"id":"pay_${i}","note":"${'x'.repeat(i % 97)}"}`),
    );
    const copies = sources.map((source) => {
      const bytes = allocate(source.length);
      source.copy(bytes);
      return bytes;
    });
    expect(new Set(copies.map((copy) => copy.buffer)).size).toBeGreaterThan(1);
    for (const [i, copy] of copies.entries()) expect(copy.equals(sources[i] as Buffer)).toBe(true);
  });

  it('gives an allocation over half a chunk a buffer of exactly its size', () => {
    const bytes = chunkAllocator()(40_000);
    expect(bytes.length).toBe(40_000);
    expect(bytes.buffer.byteLength).toBe(40_000);
  });

  it('hands out an empty buffer for nothing', () => {
    expect(chunkAllocator()(0).length).toBe(0);
  });
});
