import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../stores/memory.js';
import type { ClaimInput, ClaimResult, SyncStoreOperations } from '../vocabulary/index.js';
import { claimThisTurn } from './turn-claims.js';

function input(key: string): ClaimInput {
  return { key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: 60_000 };
}

/** A synchronous store that records each claim it answers. */
function recordingStore(claimed: string[], failOn?: string): SyncStoreOperations {
  const memory = createMemoryStore();
  const sync = memory.sync as SyncStoreOperations;
  return {
    store: memory,
    claim(claimInput): ClaimResult {
      if (claimInput.key === failOn) throw new Error(`cannot claim ${failOn}`);
      claimed.push(claimInput.key);
      return sync.claim(claimInput);
    },
    complete: sync.complete,
  };
}

describe('claimThisTurn', () => {
  it('claims nothing until the check phase, then every claim of the turn in the order asked', async () => {
    const claimed: string[] = [];
    const store = recordingStore(claimed);
    const answers = [claimThisTurn(store, input('a')), claimThisTurn(store, input('b'))];
    await Promise.resolve();
    await Promise.resolve();
    expect(claimed).toEqual([]);
    const third = claimThisTurn(store, input('c'));
    await new Promise<void>((resolve) => setImmediate(resolve));
    expect(claimed).toEqual(['a', 'b', 'c']);
    const results = await Promise.all([...answers, third]);
    expect(results.map((r) => r.status)).toEqual(['acquired', 'acquired', 'acquired']);
  });

  it('gives the same key asked for twice in one turn to the first claim only', async () => {
    const store = recordingStore([]);
    const [first, second] = await Promise.all([claimThisTurn(store, input('k')), claimThisTurn(store, input('k'))]);
    expect(first.status).toBe('acquired');
    expect(second.status).toBe('in_flight');
  });

  it('rejects a claim that throws and answers the others of its turn', async () => {
    const claimed: string[] = [];
    const store = recordingStore(claimed, 'bad');
    const results = await Promise.allSettled([
      claimThisTurn(store, input('a')),
      claimThisTurn(store, input('bad')),
      claimThisTurn(store, input('b')),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason).toBeInstanceOf(Error);
    expect(claimed).toEqual(['a', 'b']);
  });

  it('starts a new batch for claims asked for while a batch is being answered', async () => {
    const claimed: string[] = [];
    const store = recordingStore(claimed);
    const later = claimThisTurn(store, input('first')).then(() => claimThisTurn(store, input('second')));
    await expect(later).resolves.toMatchObject({ status: 'acquired' });
    expect(claimed).toEqual(['first', 'second']);
  });
});
