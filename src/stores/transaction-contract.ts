/**
 * The contract of the optional `transaction` store operation (`ctx.transaction()`), as plain
 * `{ name, run }` cases like the rest of the store contract: the application's write and the
 * step commit together, and a stale token's transaction is rolled back, its write with it. Each
 * case writes a real row in the application's table through the client the store hands out, and
 * counts it afterwards: a mocked client proves nothing about atomicity.
 *
 * @module
 */
import { deepStrictEqual, ok, rejects, strictEqual } from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { ClaimResult, IdempotencyStore, TransactionWork } from '../vocabulary/index.js';

/** What a store's test passes to the transaction cases. */
export interface TransactionHarness {
  /** Returns a store with a `transaction` operation. */
  store(): IdempotencyStore | Promise<IdempotencyStore>;
  /**
   * Writes one row tagged `id` into an application table through `client` (the store's
   * connection). Synchronous for a store whose transactions are (SQLite).
   */
  write(client: unknown, id: string): void | Promise<void>;
  /** Counts the committed rows tagged `id`, from outside the transaction. */
  count(id: string): number | Promise<number>;
}

/** One case of the transaction contract. */
export interface TransactionContractCase {
  name: string;
  run(harness: TransactionHarness): Promise<void>;
}

const DAY = 86_400_000;

function freshKey(): string {
  return `contract-tx:${randomUUID()}`;
}

async function acquire(store: IdempotencyStore, key: string, leaseMs = 60_000) {
  const result = await store.claim({ key, fingerprint: 'fp', leaseMs, ttlMs: DAY });
  strictEqual(result.status, 'acquired', `expected to acquire ${key}, got ${result.status}`);
  return result as Extract<ClaimResult, { status: 'acquired' }>;
}

/** Work that writes the row and returns `text`, synchronously when the harness's write is. */
function writing(h: TransactionHarness, id: string, text: string, thenThrow?: Error): TransactionWork {
  return (client) => {
    const written = h.write(client, id);
    const finish = () => {
      if (thenThrow) throw thenThrow;
      return text;
    };
    return written === undefined ? finish() : written.then(finish);
  };
}

function transactionOf(store: IdempotencyStore): NonNullable<IdempotencyStore['transaction']> {
  ok(typeof store.transaction === 'function', 'the store has a transaction operation');
  return store.transaction.bind(store);
}

/** The steps a fresh owner of `key` finds, after releasing `token`. */
async function stepsAfterRelease(store: IdempotencyStore, key: string, token: number) {
  await store.release(key, token, DAY);
  return (await acquire(store, key)).steps;
}

/**
 * The cases. Run each with your store and an application table in the same database.
 *
 * @example
 * ```ts
 * import { transactionContractCases } from 'idempo/contract';
 * for (const c of transactionContractCases) {
 *   it(c.name, () => c.run({
 *     store: () => store,
 *     write: (client, id) => (client as pg.PoolClient).query('INSERT INTO effects (id) VALUES ($1)', [id]).then(() => {}),
 *     count: async (id) => Number((await pool.query('SELECT count(*) FROM effects WHERE id = $1', [id])).rows[0].count),
 *   }));
 * }
 * ```
 */
export const transactionContractCases: readonly TransactionContractCase[] = [
  {
    name: "transaction commits the application's write and the step together",
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const id = randomUUID();
      const owner = await acquire(store, key);
      const result = await transactionOf(store)({ key, token: owner.token, name: 'tx' }, writing(h, id, '{"n":1}'));
      strictEqual(result, 'ok');
      strictEqual(await h.count(id), 1);
      deepStrictEqual(await stepsAfterRelease(store, key, owner.token), { tx: '{"n":1}' });
    },
  },
  {
    name: "a stale owner's transaction is refused and rolled back, its write with it",
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const id = randomUUID();
      const stale = await acquire(store, key, 50);
      await new Promise((done) => setTimeout(done, 80));
      const current = await acquire(store, key);
      strictEqual(current.recovered, true);
      const result = await transactionOf(store)({ key, token: stale.token, name: 'tx' }, writing(h, id, '1'));
      strictEqual(result, 'stale');
      strictEqual(await h.count(id), 0);
      deepStrictEqual(await stepsAfterRelease(store, key, current.token), {});
    },
  },
  {
    name: 'a transaction on a completed record is stale and rolled back',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const id = randomUUID();
      const owner = await acquire(store, key);
      strictEqual(
        await store.complete(key, owner.token, { status: 200, headers: [], body: new Uint8Array() }, DAY),
        'ok',
      );
      strictEqual(await transactionOf(store)({ key, token: owner.token, name: 'tx' }, writing(h, id, '1')), 'stale');
      strictEqual(await h.count(id), 0);
    },
  },
  {
    name: 'what the work throws rejects the transaction, as thrown, and nothing of it commits',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const id = randomUUID();
      const owner = await acquire(store, key);
      const boom = new Error('boom');
      await rejects(
        transactionOf(store)({ key, token: owner.token, name: 'tx' }, writing(h, id, '1', boom)),
        (error) => error === boom,
      );
      strictEqual(await h.count(id), 0);
      deepStrictEqual(await stepsAfterRelease(store, key, owner.token), {});
    },
  },
  {
    name: 'without a step it is a plain transaction of the application',
    async run(h) {
      const store = await h.store();
      const id = randomUUID();
      strictEqual(await transactionOf(store)(undefined, writing(h, id, '1')), 'ok');
      strictEqual(await h.count(id), 1);
    },
  },
];
