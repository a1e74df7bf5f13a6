/**
 * The store contract suite: one list of plain `{ name, run }` cases that proves a store keeps
 * the contract (the types and the rules they follow are in src/vocabulary/store-contract.ts),
 * run against every idempo store on a real backend and published as `idempo/contract` for
 * anyone who writes a store of their own.
 *
 * @module
 */
import { deepStrictEqual, ok, strictEqual } from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { ClaimResult, IdempotencyStore, RecordInfo, RecordQuery, StoredResponse } from '../vocabulary/index.js';

// The contract's types, for a store written against `idempo/contract` alone.
export type {
  ClaimInput,
  ClaimResult,
  DeleteResult,
  FencedResult,
  IdempotencyStore,
  RecordInfo,
  RecordPage,
  RecordQuery,
  RecordState,
  RewriteResult,
  StoredResponse,
  SyncStoreOperations,
  TransactionStep,
  TransactionWork,
} from '../vocabulary/index.js';
export {
  type TransactionContractCase,
  type TransactionHarness,
  transactionContractCases,
} from './transaction-contract.js';

/** One case of the shared store contract suite. */
export interface StoreContractCase {
  /** What the case proves. */
  name: string;
  /** Runs the case against a fresh store from `harness`; throws an assertion error on failure. */
  run(harness: StoreHarness): Promise<void>;
}

/** What a store's test passes to the contract cases. */
export interface StoreHarness {
  /** Returns a store; may be the same instance each time, since every case uses fresh keys. */
  store(): IdempotencyStore | Promise<IdempotencyStore>;
  /** Optional: a second store on the same backend through another connection, for cross-connection races. */
  otherStore?(): IdempotencyStore | Promise<IdempotencyStore>;
}

const LONG = 60_000;
const DAY = 86_400_000;

function freshKey(): string {
  return `contract:${randomUUID()}`;
}

function response(text: string, status = 201): StoredResponse {
  return {
    status,
    headers: [
      ['content-type', 'text/plain'],
      ['x-multi', 'a'],
      ['x-multi', 'b'],
    ],
    body: new TextEncoder().encode(text),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function acquire(store: IdempotencyStore, key: string, fingerprint = 'fp-a', leaseMs = LONG, ttlMs = DAY) {
  const result = await store.claim({ key, fingerprint, leaseMs, ttlMs });
  strictEqual(result.status, 'acquired', `expected to acquire ${key}, got ${result.status}`);
  return result as Extract<ClaimResult, { status: 'acquired' }>;
}

/** Every record `list` returns for `query`, page after page. */
async function listAll(store: IdempotencyStore, query: RecordQuery): Promise<RecordInfo[]> {
  const all: RecordInfo[] = [];
  let cursor: string | undefined;
  do {
    const page = await (store.list as NonNullable<IdempotencyStore['list']>)({
      ...query,
      ...(cursor === undefined ? {} : { cursor }),
    });
    all.push(...page.records);
    cursor = page.cursor;
  } while (cursor !== undefined);
  return all;
}

function bytesEqual(actual: Uint8Array, expected: Uint8Array, message: string): void {
  deepStrictEqual(Buffer.from(actual).toString('hex'), Buffer.from(expected).toString('hex'), message);
}

/**
 * The shared contract suite: plain `{ name, run }` cases with no test-runner dependency, so any
 * runner can drive them.
 *
 * @example
 * ```ts
 * import { storeContractCases } from 'idempo/contract';
 * for (const c of storeContractCases) it(c.name, () => c.run({ store: () => myStore }));
 * ```
 */
export const storeContractCases: readonly StoreContractCase[] = [
  {
    name: 'a first claim acquires with a token, no steps and recovered false',
    async run(h) {
      const store = await h.store();
      const result = await acquire(store, freshKey());
      ok(Number.isSafeInteger(result.token) && result.token > 0, 'token is a positive safe integer');
      deepStrictEqual(result.steps, {});
      strictEqual(result.recovered, false);
    },
  },
  {
    name: 'a second claim while the first is live is in_flight with a positive retryAfterMs',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      await acquire(store, key);
      const second = await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY });
      strictEqual(second.status, 'in_flight');
      if (second.status === 'in_flight') {
        ok(second.retryAfterMs > 0 && second.retryAfterMs <= LONG, `retryAfterMs ${second.retryAfterMs}`);
      }
    },
  },
  {
    name: 'a claim with another fingerprint is a mismatch in every state',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual((await store.claim({ key, fingerprint: 'fp-b', leaseMs: LONG, ttlMs: DAY })).status, 'mismatch');
      strictEqual(await store.release(key, first.token, DAY), 'ok');
      strictEqual((await store.claim({ key, fingerprint: 'fp-b', leaseMs: LONG, ttlMs: DAY })).status, 'mismatch');
      const second = await acquire(store, key);
      strictEqual(await store.complete(key, second.token, response('done'), DAY), 'ok');
      strictEqual((await store.claim({ key, fingerprint: 'fp-b', leaseMs: LONG, ttlMs: DAY })).status, 'mismatch');
    },
  },
  {
    name: 'complete stores the response and later claims replay it byte for byte, headers in order',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      const body = new Uint8Array(70_000);
      for (let i = 0; i < body.length; i++) body[i] = (i * 31 + 7) % 256;
      const stored: StoredResponse = { ...response(''), status: 202, body };
      strictEqual(await store.complete(key, first.token, stored, DAY), 'ok');
      for (let i = 0; i < 2; i++) {
        const replay = await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY });
        strictEqual(replay.status, 'replay');
        if (replay.status !== 'replay') return;
        strictEqual(replay.response.status, 202);
        deepStrictEqual(replay.response.headers, stored.headers);
        bytesEqual(replay.response.body, body, 'binary body survives unchanged');
      }
    },
  },
  {
    name: 'an empty body and no headers round-trip',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual(
        await store.complete(key, first.token, { status: 204, headers: [], body: new Uint8Array() }, DAY),
        'ok',
      );
      const replay = await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY });
      strictEqual(replay.status, 'replay');
      if (replay.status !== 'replay') return;
      strictEqual(replay.response.status, 204);
      deepStrictEqual(replay.response.headers, []);
      strictEqual(replay.response.body.length, 0);
    },
  },
  {
    name: 'release lets the next claim acquire with a higher token and the saved steps',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual(await store.saveStep(key, first.token, 'charge', '{"id":"ch_1"}'), 'ok');
      strictEqual(await store.release(key, first.token, DAY), 'ok');
      const second = await acquire(store, key);
      ok(second.token > first.token, 'token grows');
      deepStrictEqual(second.steps, { charge: '{"id":"ch_1"}' });
      strictEqual(second.recovered, false);
    },
  },
  {
    name: 'fenced writes with a stale token change nothing',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual(await store.release(key, first.token, DAY), 'ok');
      const second = await acquire(store, key);
      strictEqual(await store.complete(key, first.token, response('late'), DAY), 'stale');
      strictEqual(await store.release(key, first.token, DAY), 'stale');
      strictEqual(await store.renew(key, first.token, LONG), 'stale');
      strictEqual(await store.saveStep(key, first.token, 'x', '1'), 'stale');
      strictEqual((await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY })).status, 'in_flight');
      strictEqual(await store.complete(key, second.token, response('winner'), DAY), 'ok');
      const replay = await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY });
      strictEqual(replay.status, 'replay');
      if (replay.status === 'replay') strictEqual(new TextDecoder().decode(replay.response.body), 'winner');
    },
  },
  {
    name: 'writes on a completed record or an absent key are stale',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual(await store.complete(key, first.token, response('one'), DAY), 'ok');
      strictEqual(await store.complete(key, first.token, response('two'), DAY), 'stale');
      strictEqual(await store.release(key, first.token, DAY), 'stale');
      strictEqual(await store.renew(key, first.token, LONG), 'stale');
      const absent = freshKey();
      strictEqual(await store.complete(absent, first.token, response('x'), DAY), 'stale');
      strictEqual(await store.release(absent, first.token, DAY), 'stale');
      strictEqual(await store.renew(absent, first.token, LONG), 'stale');
      strictEqual(await store.saveStep(absent, first.token, 'x', '1'), 'stale');
      const replay = await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY });
      ok(replay.status === 'replay' && new TextDecoder().decode(replay.response.body) === 'one');
    },
  },
  {
    name: 'an expired lease is taken over: token+1, recovered, steps kept; the old owner is fenced out',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key, 'fp-a', 150);
      strictEqual(await store.saveStep(key, first.token, 'a', '"A"'), 'ok');
      await sleep(250);
      const second = await acquire(store, key);
      ok(second.token > first.token, 'token grows on takeover');
      strictEqual(second.recovered, true);
      deepStrictEqual(second.steps, { a: '"A"' });
      strictEqual(await store.complete(key, first.token, response('stale'), DAY), 'stale');
      strictEqual(await store.complete(key, second.token, response('fresh'), DAY), 'ok');
    },
  },
  {
    name: 'renew keeps a lease alive past its first deadline',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key, 'fp-a', 300);
      for (let i = 0; i < 4; i++) {
        await sleep(120);
        strictEqual(await store.renew(key, first.token, 300), 'ok');
      }
      strictEqual((await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY })).status, 'in_flight');
    },
  },
  {
    // The engine hands a taken-over key back this way when its client leaves before the handler
    // starts: the next claim must still see a record whose earlier run may have happened.
    name: 'renew to 0 ms ends the lease at once: the next claim takes over at once, recovered, steps kept',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual(await store.saveStep(key, first.token, 'a', '1'), 'ok');
      strictEqual(await store.renew(key, first.token, 0), 'ok');
      // Some stores keep time in whole milliseconds: the lease ends within the next one.
      await sleep(2);
      const second = await acquire(store, key, 'fp-a', LONG);
      strictEqual(second.token > first.token, true);
      strictEqual(second.recovered, true);
      deepStrictEqual(second.steps, { a: '1' });
      strictEqual(await store.complete(key, first.token, response('late'), DAY), 'stale');
    },
  },
  {
    name: 'saveStep overwrites a step of the same name and keeps others',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual(await store.saveStep(key, first.token, 'a', '1'), 'ok');
      strictEqual(await store.saveStep(key, first.token, 'b', '{"n":"ü"}'), 'ok');
      strictEqual(await store.saveStep(key, first.token, 'a', '2'), 'ok');
      strictEqual(await store.release(key, first.token, DAY), 'ok');
      const second = await acquire(store, key);
      deepStrictEqual(second.steps, { a: '2', b: '{"n":"ü"}' });
    },
  },
  {
    name: 'a completed record disappears after its ttl and the key starts over with a higher token',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key, 'fp-a', LONG, 1_000);
      strictEqual(await store.complete(key, first.token, response('old'), 1_000), 'ok');
      strictEqual((await store.claim({ key, fingerprint: 'fp-b', leaseMs: LONG, ttlMs: DAY })).status, 'mismatch');
      await sleep(1_300);
      const again = await acquire(store, key, 'fp-b');
      ok(again.token > first.token, 'a new lifetime starts above the old tokens');
      deepStrictEqual(again.steps, {});
      strictEqual(await store.complete(key, first.token, response('stale'), DAY), 'stale');
    },
  },
  {
    name: 'a released record disappears after its ttl',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key, 'fp-a', LONG, 1_000);
      strictEqual(await store.saveStep(key, first.token, 's', '1'), 'ok');
      strictEqual(await store.release(key, first.token, 1_000), 'ok');
      await sleep(1_300);
      const again = await acquire(store, key, 'fp-b');
      deepStrictEqual(again.steps, {});
    },
  },
  {
    name: 'a live in_flight record outlives its ttl while its lease is renewed',
    async run(h) {
      const store = await h.store();
      const key = freshKey();
      const first = await acquire(store, key, 'fp-a', 1_500, 1_000);
      await sleep(1_200);
      strictEqual(await store.renew(key, first.token, 1_500), 'ok');
      strictEqual((await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY })).status, 'in_flight');
      strictEqual(await store.complete(key, first.token, response('late but owned'), DAY), 'ok');
    },
  },
  {
    name: '100 concurrent claims of one new key: exactly one acquires, the rest are in_flight',
    async run(h) {
      const a = await h.store();
      const b = h.otherStore ? await h.otherStore() : a;
      const key = freshKey();
      const results = await Promise.all(
        Array.from({ length: 100 }, (_, i) =>
          (i % 2 ? b : a).claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY }),
        ),
      );
      strictEqual(results.filter((r) => r.status === 'acquired').length, 1);
      strictEqual(results.filter((r) => r.status === 'in_flight').length, 99);
    },
  },
  {
    name: 'concurrent takeovers of an expired lease: exactly one wins',
    async run(h) {
      const a = await h.store();
      const b = h.otherStore ? await h.otherStore() : a;
      const key = freshKey();
      await acquire(a, key, 'fp-a', 100);
      await sleep(200);
      const results = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          (i % 2 ? b : a).claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY }),
        ),
      );
      const won = results.filter((r) => r.status === 'acquired');
      strictEqual(won.length, 1);
      strictEqual((won[0] as Extract<ClaimResult, { status: 'acquired' }>).recovered, true);
    },
  },
  {
    name: 'waitForChange wakes on complete well before its timeout',
    async run(h) {
      const store = await h.store();
      ok(store.waitForChange, 'the store offers waitForChange (a store without it may leave this case out by name)');
      const key = freshKey();
      const first = await acquire(store, key);
      const started = Date.now();
      const waiting = store.waitForChange(key, 5_000);
      await sleep(100);
      strictEqual(await store.complete(key, first.token, response('done'), DAY), 'ok');
      await waiting;
      ok(Date.now() - started < 2_500, `woke after ${Date.now() - started} ms`);
    },
  },
  {
    name: 'inspect shows a record through its states: in flight with its lease and steps, completed with its response, released',
    async run(h) {
      const store = await h.store();
      ok(store.inspect, 'the store offers inspect');
      const key = freshKey();
      strictEqual(await store.inspect(key), undefined);
      const before = Date.now();
      const first = await acquire(store, key);
      strictEqual(await store.saveStep(key, first.token, 'charge', '"ch_1"'), 'ok');
      const running = await store.inspect(key);
      ok(running, 'an in-flight record is found');
      strictEqual(running.key, key);
      strictEqual(running.state, 'in_flight');
      strictEqual(running.token, first.token);
      deepStrictEqual(running.steps, ['charge']);
      ok((running.leaseUntil ?? 0) > Date.now() + LONG / 2, `lease until ${running.leaseUntil}`);
      ok(running.expiresAt >= (running.leaseUntil ?? 0), 'expiry is never before the lease');
      // The record's creation, on the store's clock: close to this one's.
      ok(Math.abs((running.createdAt ?? 0) - before) < 5_000, `created at ${running.createdAt}, claimed at ${before}`);

      strictEqual(await store.complete(key, first.token, response('kept', 201), DAY), 'ok');
      const done = await store.inspect(key);
      strictEqual(done?.state, 'completed');
      strictEqual(done?.response?.status, 201);
      bytesEqual(done?.response?.body ?? new Uint8Array(), response('kept').body, 'the stored body');
      deepStrictEqual(done?.response?.headers, response('kept').headers);
      ok((done?.expiresAt ?? 0) > Date.now() + DAY / 2, 'kept for its ttl');

      const other = freshKey();
      const owner = await acquire(store, other);
      strictEqual(await store.release(other, owner.token, DAY), 'ok');
      const released = await store.inspect(other);
      strictEqual(released?.state, 'released');
      strictEqual(released?.response, undefined);
    },
  },
  {
    name: 'list pages through records by state and age with a cursor, each record in its state',
    async run(h) {
      const store = await h.store();
      ok(store.list, 'the store offers list');
      const mine = new Map<string, string>();
      for (let i = 0; i < 7; i++) {
        const key = freshKey();
        const owner = await acquire(store, key);
        if (i % 3 === 1) strictEqual(await store.complete(key, owner.token, response(`r${i}`), DAY), 'ok');
        if (i % 3 === 2) strictEqual(await store.release(key, owner.token, DAY), 'ok');
        mine.set(key, ['in_flight', 'completed', 'released'][i % 3] as string);
      }
      const seen = new Map<string, string>();
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await store.list({ limit: 3, ...(cursor === undefined ? {} : { cursor }) });
        ok(page.records.length <= 3, `a page of ${page.records.length} records for a limit of 3`);
        for (const record of page.records) {
          const before = seen.get(record.key);
          ok(before === undefined || before === record.state, `${record.key} listed as ${before} and ${record.state}`);
          seen.set(record.key, record.state);
        }
        cursor = page.cursor;
        pages++;
      } while (cursor !== undefined && pages < 10_000);
      for (const [key, state] of mine) strictEqual(seen.get(key), state, `${key} listed as ${state}`);

      const completed = await listAll(store, { state: 'completed' });
      ok(completed.every((r) => r.state === 'completed'));
      deepStrictEqual(
        [...mine].filter(([, state]) => state === 'completed').every(([key]) => completed.some((r) => r.key === key)),
        true,
      );
      // None of these was created an hour ago.
      const old = await listAll(store, { olderThanMs: 3_600_000 });
      ok(![...mine.keys()].some((key) => old.some((r) => r.key === key)), 'a new record listed as an hour old');
      await sleep(300);
      const aged = await listAll(store, { olderThanMs: 200, state: 'in_flight' });
      ok(
        [...mine].filter(([, state]) => state === 'in_flight').every(([key]) => aged.some((r) => r.key === key)),
        'in-flight records older than 200 ms are listed',
      );
    },
  },
  {
    name: 'delete removes a finished record so the key runs again, refuses a live in-flight one unless forced, and fences its owner out',
    async run(h) {
      const store = await h.store();
      ok(store.delete, 'the store offers delete');
      const key = freshKey();
      strictEqual(await store.delete(key), 'absent');
      const first = await acquire(store, key);
      strictEqual(await store.complete(key, first.token, response('a 4xx', 422), DAY), 'ok');
      strictEqual(await store.delete(key), 'deleted');
      strictEqual(await store.inspect?.(key), undefined);
      const again = await acquire(store, key);

      strictEqual(await store.delete(key), 'in_flight');
      strictEqual((await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY })).status, 'in_flight');
      strictEqual(await store.delete(key, { force: true }), 'deleted');
      const taken = await acquire(store, key);
      ok(
        taken.token > again.token,
        `the next owner's token ${taken.token} is above the deleted owner's ${again.token}`,
      );
      strictEqual(await store.complete(key, again.token, response('late'), DAY), 'stale');
      strictEqual(await store.complete(key, taken.token, response('new'), DAY), 'ok');
    },
  },
  {
    name: 'rewriteResponse swaps the response of a completed record that holds the expected body, keeping its fingerprint and expiry, and leaves every other record alone',
    async run(h) {
      const store = await h.store();
      ok(store.rewriteResponse, 'the store offers rewriteResponse');
      const key = freshKey();
      const first = await acquire(store, key);
      strictEqual(await store.complete(key, first.token, response('old'), DAY), 'ok');
      const before = await store.inspect?.(key);
      strictEqual(await store.rewriteResponse(key, response('other').body, response('x')), 'changed');
      const replacement: StoredResponse = { status: 203, headers: [['x-new', '1']], body: new Uint8Array([0, 255, 1]) };
      strictEqual(await store.rewriteResponse(key, response('old').body, replacement), 'ok');
      const replay = await store.claim({ key, fingerprint: 'fp-a', leaseMs: LONG, ttlMs: DAY });
      strictEqual(replay.status, 'replay');
      if (replay.status === 'replay') {
        strictEqual(replay.response.status, 203);
        deepStrictEqual(replay.response.headers, [['x-new', '1']]);
        bytesEqual(replay.response.body, replacement.body, 'the new body');
      }
      strictEqual((await store.claim({ key, fingerprint: 'fp-b', leaseMs: LONG, ttlMs: DAY })).status, 'mismatch');
      if (before !== undefined) {
        const after = await store.inspect?.(key);
        ok(Math.abs((after?.expiresAt ?? 0) - before.expiresAt) < 2_000, 'the expiry is kept');
      }
      // The old body is gone: a second rewrite expecting it changes nothing.
      strictEqual(await store.rewriteResponse(key, response('old').body, response('y')), 'changed');

      const running = freshKey();
      const owner = await acquire(store, running);
      strictEqual(await store.rewriteResponse(running, new Uint8Array(), response('x')), 'changed');
      strictEqual(await store.release(running, owner.token, DAY), 'ok');
      strictEqual(await store.rewriteResponse(running, new Uint8Array(), response('x')), 'changed');
      strictEqual(await store.rewriteResponse(freshKey(), new Uint8Array(), response('x')), 'changed');
      strictEqual((await acquire(store, running)).status, 'acquired');
    },
  },
];
