import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../stores/memory.js';
import {
  IdempotencyConflictError,
  IdempotencyError,
  IdempotencyKeyInvalidError,
  IdempotencyMismatchError,
  IdempotencyResponseNotKeptError,
  IdempotencyUpstreamTimeoutError,
} from '../vocabulary/index.js';
import { makeIdempotent } from './function.js';

interface Order {
  id: string;
  amount: number;
}

function counted<R>(result: (order: Order) => R) {
  const runs: string[] = [];
  const fn = async function charge(order: Order) {
    runs.push(order.id);
    return result(order);
  };
  return { runs, fn };
}

describe('makeIdempotent', () => {
  it('runs once per key and gives every later call the first result', async () => {
    const { runs, fn } = counted((order) => ({ chargeId: `ch_${order.id}`, at: Math.random() }));
    const charge = makeIdempotent(fn, { store: createMemoryStore(), key: (order) => order.id });
    const first = await charge({ id: 'o1', amount: 5 });
    expect(await charge({ id: 'o1', amount: 5 })).toEqual(first);
    expect(await charge({ amount: 5, id: 'o1' })).toEqual(first);
    expect(runs).toEqual(['o1']);
    await charge({ id: 'o2', amount: 5 });
    expect(runs).toEqual(['o1', 'o2']);
  });

  it('refuses the key with another input, and compares only what fingerprint picks', async () => {
    const { runs, fn } = counted(() => 'ok');
    const store = createMemoryStore();
    const charge = makeIdempotent(fn, { store, key: (order) => order.id });
    await charge({ id: 'o1', amount: 5 });
    await expect(charge({ id: 'o1', amount: 6 })).rejects.toBeInstanceOf(IdempotencyMismatchError);
    const byAmountOnly = makeIdempotent(fn, {
      store,
      name: 'by-amount',
      key: (order) => order.id,
      fingerprint: (order) => order.amount,
    });
    await byAmountOnly({ id: 'o9', amount: 1 });
    expect(await byAmountOnly({ id: 'o9', amount: 1 })).toBe('ok');
    expect(runs).toEqual(['o1', 'o9']);
  });

  it('keeps two functions’ keys apart by name', async () => {
    const store = createMemoryStore();
    const a = makeIdempotent(async () => 'a', { store, name: 'a', key: (id: string) => id });
    const b = makeIdempotent(async () => 'b', { store, name: 'b', key: (id: string) => id });
    expect(await a('m-1')).toBe('a');
    expect(await b('m-1')).toBe('b');
  });

  it('refuses a duplicate while the first call runs, or waits for its result', async () => {
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    let runs = 0;
    const slow = async function slow(id: string) {
      runs++;
      await gate;
      return `done ${id}`;
    };
    const store = createMemoryStore();
    const rejecting = makeIdempotent(slow, { store, key: (id) => id });
    const waiting = makeIdempotent(slow, { store, key: (id) => id, concurrent: 'wait' });
    const first = rejecting('k');
    await new Promise((r) => setTimeout(r, 20));
    await expect(rejecting('k')).rejects.toBeInstanceOf(IdempotencyConflictError);
    const waiter = waiting('k');
    release();
    expect(await first).toBe('done k');
    expect(await waiter).toBe('done k');
    expect(runs).toBe(1);
  });

  it('releases the key when the function throws, so the next call runs it again', async () => {
    let runs = 0;
    const flaky = makeIdempotent(
      async function flaky(id: string) {
        runs++;
        if (runs === 1) throw new Error('card network down');
        return `ok ${id}`;
      },
      { store: createMemoryStore(), key: (id) => id },
    );
    await expect(flaky('k')).rejects.toThrow('card network down');
    expect(await flaky('k')).toBe('ok k');
    expect(await flaky('k')).toBe('ok k');
    expect(runs).toBe(2);
  });

  it('keeps the key when the outcome is unknown: the next call is refused until the lease passes', async () => {
    let runs = 0;
    const unsure = makeIdempotent(
      async function unsure() {
        runs++;
        if (runs === 1) throw new IdempotencyUpstreamTimeoutError('the provider did not answer');
        return 'ok';
      },
      { store: createMemoryStore(), key: (id: string) => id, lease: 300 },
    );
    await expect(unsure('k')).rejects.toBeInstanceOf(IdempotencyUpstreamTimeoutError);
    await expect(unsure('k')).rejects.toBeInstanceOf(IdempotencyConflictError);
    await new Promise((r) => setTimeout(r, 400));
    expect(await unsure('k')).toBe('ok');
    expect(runs).toBe(2);
  });

  it('keeps a run whose result JSON cannot write completed: the caller gets it, a retry is told it was not kept', async () => {
    let runs = 0;
    const big = makeIdempotent(
      async function big() {
        runs++;
        return { amount: 10n };
      },
      { store: createMemoryStore(), key: (id: string) => id },
    );
    expect(await big('k')).toEqual({ amount: 10n });
    await expect(big('k')).rejects.toBeInstanceOf(IdempotencyResponseNotKeptError);
    expect(runs).toBe(1);
  });

  it('stores results with a codec of one’s own, and undefined as undefined', async () => {
    const dates = makeIdempotent(async () => new Date('2026-12-03T10:00:00Z'), {
      store: createMemoryStore(),
      name: 'dates',
      key: (id: string) => id,
      codec: { encode: (d) => d.toISOString(), decode: (bytes) => new Date(new TextDecoder().decode(bytes)) },
    });
    await dates('k');
    const replayed = await dates('k');
    expect(replayed).toBeInstanceOf(Date);
    expect(replayed.toISOString()).toBe('2026-12-03T10:00:00.000Z');
    const nothing = makeIdempotent(async () => undefined, { store: createMemoryStore(), name: 'n', key: () => 'k' });
    await nothing(0);
    expect(await nothing(0)).toBeUndefined();
  });

  it('gives ctx.step and the key to the function, and refuses a bad key or a nameless function clearly', async () => {
    const seen: string[] = [];
    const withSteps = makeIdempotent(
      async (id: string, ctx) => {
        seen.push(ctx.key);
        return ctx.step('charge', () => `ch_${id}`);
      },
      { store: createMemoryStore(), name: 'steps', key: (id) => id },
    );
    expect(await withSteps('k-1')).toBe('ch_k-1');
    expect(seen).toEqual(['k-1']);
    await expect(withSteps('not a visible key\n')).rejects.toBeInstanceOf(IdempotencyKeyInvalidError);
    expect(() => makeIdempotent(async () => 1, { store: createMemoryStore(), key: () => 'k' })).toThrow(
      expect.objectContaining({
        code: 'IDEMPO_CONFIG_INVALID',
        message: expect.stringMatching(/give the function a `name`/),
      }),
    );
    const error = await withSteps(42 as unknown as string).catch((e) => e);
    expect(error).toBeInstanceOf(IdempotencyError);
  });
});
