/**
 * Where the memory store keeps the response bodies it holds: copies, packed side by side into
 * buffers of its own.
 *
 * @module
 */

/** The size of the buffers small bodies are packed into; bodies over half of it get their own. */
const CHUNK_BYTES = 8192;
const EMPTY = Buffer.alloc(0);

/**
 * Returns a function that copies a body into memory the store owns and returns the copy.
 *
 * Why copy: a body is usually a few bytes cut from one of Node's shared 8 KiB buffer slabs, and
 * holding such a view holds the whole slab with whatever else the process cut from it (request
 * bytes, other responses): in a node:http server holding 100,000 records, 13 to 15 MB outside the
 * JavaScript heap for 7 MB of bodies (bench/notes/2026-12-05-memory-bodies.md). Copies of the
 * bodies a store keeps are packed side by side, so a chunk holds nothing else; records leave in
 * about the order they came (eviction takes the oldest, and they share a ttl), and so do their
 * chunks. The copy also means a caller that later reuses its buffer does not change what is
 * replayed, as with the other stores, which write the bytes out.
 *
 * Why not a Latin-1 string (one character per byte, also lossless, and smaller): making it, and
 * turning it back into bytes on every replay, are calls into C++, which counted about 2,500 more
 * instructions a first request and a replay each; copying into a chunk counted none that
 * `bench/instructions.js` could tell from its noise.
 */
export function bodyKeeper(): (body: Uint8Array) => Buffer {
  // The first chunk is made by the first body that needs one: a store that keeps none costs none.
  let chunk = EMPTY;
  let used = 0;
  return function keep(body: Uint8Array): Buffer {
    const size = body.byteLength;
    if (size === 0) return EMPTY;
    if (size > CHUNK_BYTES / 2) return Buffer.from(body);
    if (used + size > chunk.length) {
      chunk = Buffer.allocUnsafeSlow(CHUNK_BYTES);
      used = 0;
    }
    chunk.set(body, used);
    const copy = chunk.subarray(used, used + size);
    used += size;
    return copy;
  };
}
