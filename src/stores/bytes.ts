/**
 * Bytes as the drivers take them. The store contract carries bodies as `Uint8Array`, so a body
 * may be a plain view as well as a Buffer; better-sqlite3, pg and ioredis bind only a Buffer as a
 * blob, and Buffer's own methods (`equals`, `toString` over a range) need one.
 *
 * @module
 */

/** The same bytes as a Buffer: the body itself when it is one, otherwise a view, never a copy. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
