/**
 * Claims on a synchronous store (`store.sync`), taken together at the check phase of the turn of
 * the event loop in which they were asked for, instead of each inside the callback that read its
 * request.
 *
 * Why: a server that answers each request inline interleaves one request's parsing, engine work,
 * handler and `writev` with the next's. Answered per turn, the requests read in one poll phase go
 * through each stage together, and their responses leave together. On the bench machine this
 * took Fastify + the memory store from 0.63–0.66× to 0.83× bare Fastify on first requests,
 * node:http from 0.67× to 0.80× and Express from 0.78× to 0.99×; part of it is that machine's
 * (bench/notes/2026-12-05-claims-per-turn.md).
 * The SQLite store's reads and the Redis store's writes were already answered at the check phase;
 * this puts a synchronous store in step with them. The wait it adds is the rest of one poll
 * phase; a claim is still one atomic call of the store.
 *
 * @module
 */
import type { ClaimInput, ClaimResult, SyncStoreOperations } from '../vocabulary/index.js';

interface Pending {
  store: SyncStoreOperations;
  input: ClaimInput;
  resolve(result: ClaimResult): void;
  reject(error: unknown): void;
}

let queue: Pending[] = [];

// Taken when idempo is loaded: a test that fakes timers afterwards (`vi.useFakeTimers()`,
// `jest.useFakeTimers()`) must not hold every claim on the memory store until it advances them.
const atCheckPhase = setImmediate;

function claimAll(): void {
  const batch = queue;
  queue = [];
  for (const pending of batch) {
    let result: ClaimResult;
    try {
      result = pending.store.claim(pending.input);
    } catch (error) {
      pending.reject(error);
      continue;
    }
    pending.resolve(result);
  }
}

/**
 * The store's answer to `input`, claimed at this turn's check phase together with every other
 * claim asked for in the turn, in the order they were asked for. A claim that throws rejects its
 * own promise only.
 */
export function claimThisTurn(store: SyncStoreOperations, input: ClaimInput): Promise<ClaimResult> {
  return new Promise((resolve, reject) => {
    if (queue.length === 0) atCheckPhase(claimAll);
    queue.push({ store, input, resolve, reject });
  });
}
