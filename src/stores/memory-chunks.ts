/**
 * Where the memory store keeps its records: bytes it owns, packed side by side into buffers of
 * its own.
 *
 * @module
 */

/**
 * The size of the buffers small records are packed into; records over half of it get their own.
 * Making a buffer is costly beside the few hundred bytes a record takes: in a node:http server on
 * fresh keys, Node's `createUnsafeBuffer` took 3.6% of the busy time with 8 KiB chunks and 1.0%
 * with 64 KiB (0.8% in the bare server, for its own buffers).
 */
const CHUNK_BYTES = 65536;

/**
 * Returns a function that hands out `size` writable bytes the store owns, as a Buffer.
 *
 * Why chunks: most records are a few hundred bytes, and a buffer of its own for each would cost
 * an allocation outside the heap and a tracked backing store apiece. Records leave in about the
 * order they came (eviction takes the oldest, and they share a ttl), and so do their chunks; a
 * chunk is freed when the last record in it goes.
 *
 * Why bytes and not the response's own body: a body is usually a few bytes cut from one of
 * Node's shared 8 KiB buffer slabs, and holding such a view holds the whole slab with whatever
 * else the process cut from it (request bytes, other responses): in a node:http server holding
 * 100,000 records, 13 to 15 MB outside the JavaScript heap for 7 MB of bodies
 * (bench/notes/2026-12-05-memory-bodies.md). The copy also means a caller that later reuses its
 * buffer does not change what is replayed, as with the other stores, which write the bytes out.
 */
export function chunkAllocator(): (size: number) => Buffer {
  // The first chunk is made by the first record that needs one: a store that keeps none costs none.
  let chunk = Buffer.alloc(0);
  let used = 0;
  return function allocate(size: number): Buffer {
    if (size > CHUNK_BYTES / 2) return Buffer.allocUnsafeSlow(size);
    if (used + size > chunk.length) {
      chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES);
      used = 0;
    }
    const bytes = chunk.subarray(used, used + size);
    used += size;
    return bytes;
  };
}
