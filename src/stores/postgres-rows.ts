/**
 * How the PostgreSQL store reads the columns `pg` hands back: tokens, `jsonb` and `bytea`. The
 * request path and the operations read rows alike.
 *
 * @module
 */
import { IdempotencyStoreUnavailableError } from '../vocabulary/index.js';

/** Tokens are `bigint` in the table and travel as text; anything outside a safe integer is a corrupt row. */
export function parseToken(value: unknown): number {
  const token = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(token))
    throw new IdempotencyStoreUnavailableError(
      `The PostgreSQL store read a token that is not a safe integer: ${String(value)}`,
    );
  return token;
}

/** `pg` parses `jsonb` itself; an app that replaced that type parser hands us text instead. */
export function json(value: unknown, empty: unknown): unknown {
  if (value === null || value === undefined) return empty;
  return typeof value === 'string' ? JSON.parse(value) : value;
}

/** `pg` returns `bytea` as a Buffer: hand out a plain Uint8Array view of the same memory. */
export function toBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array();
}
