/**
 * Counting what reaches Redis's sockets, for the tests of the Redis store's write batching.
 */
import { randomUUID } from 'node:crypto';
import type { ClaimResult, IdempotencyStore } from '../../src/vocabulary/index.js';

/** Counts the writes to each ioredis connection's socket from now on. */
export function countSocketWrites(connections: readonly object[]): { readonly writes: number } {
  const counter = { writes: 0 };
  for (const connection of connections) {
    const socket = (connection as { stream: { _write: unknown; _writev: unknown } }).stream;
    for (const method of ['_write', '_writev'] as const) {
      const original = socket[method] as (...args: unknown[]) => unknown;
      socket[method] = function counted(this: unknown, ...args: unknown[]) {
        counter.writes++;
        return original.apply(this, args);
      };
    }
  }
  return counter;
}

/**
 * Claims `2 * half` new keys, half in this tick and half in a later tick of the same turn of the
 * event loop, as when the loop handles several sockets' requests before it polls again.
 */
export async function claimOverTwoTicks(store: IdempotencyStore, half: number): Promise<ClaimResult[]> {
  const claims = () =>
    Array.from({ length: half }, () =>
      store.claim({ key: `batch:${randomUUID()}`, fingerprint: 'fp', leaseMs: 60_000, ttlMs: 86_400_000 }),
    );
  const first = claims();
  const second = await new Promise<Promise<ClaimResult>[]>((resolve) => process.nextTick(() => resolve(claims())));
  return Promise.all([...first, ...second]);
}
