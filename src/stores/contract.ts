/**
 * The store contract: what every idempo store must do, and one suite of plain cases that
 * proves it against a real store.
 *
 * A store keeps one record per scoped key (the engine hands stores a hash, never raw user
 * input). The record moves through this state machine:
 *
 * ```
 * absent ──claim──▶ in_flight{fingerprint, token, leaseUntil, steps} ──complete(token)──▶ completed{fingerprint, response}
 *             ▲          │   └─ lease expired: next claim takes over, token+1 ("recovered")        │
 *             │          └──release(token)──▶ released{fingerprint, steps} ──claim (same fp)──▶ in_flight, token+1
 *             └──────────────────── ttl passes (any state but a live in_flight) ◀──────────────────┘
 * ```
 *
 * Rules every implementation keeps:
 * - `claim` is one atomic step. Of N concurrent claims of an absent key, across processes and
 *   machines, exactly one gets `acquired`.
 * - A key stays bound to the fingerprint of its first claim for its whole life: a claim with
 *   another fingerprint gets `mismatch` in every state.
 * - `token` is a fencing token. `complete`, `release`, `renew` and `saveStep` succeed only when
 *   their token equals the record's current token and the record is `in_flight`; otherwise they
 *   change nothing and return `'stale'`. A worker that lost its lease therefore cannot overwrite
 *   the newer owner's result.
 * - Tokens only grow, also across a record's lifetimes: a record created after an earlier one
 *   under the same key expired starts above any token the earlier one could have handed out.
 *   Stores do this by starting a fresh record at the current time in milliseconds and adding
 *   one per later claim; so a worker paused for longer than the ttl still cannot complete a
 *   record it no longer owns. (The Redis store takes that time from the app server's clock,
 *   times 1024 plus random bits, since its claim runs no script: there tokens grow across
 *   lifetimes unless app servers' clocks differ by more than lease + ttl; see
 *   docs/stores/redis.md.)
 * - A live in_flight record (lease not yet passed) is never expired or evicted: a record's
 *   expiry is never earlier than its lease, and `renew` pushes both.
 *
 * @module
 */
import { deepStrictEqual, ok, strictEqual } from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

/** A response as stored and replayed: status, headers (lower-case names, in order) and body bytes. */
export interface StoredResponse {
  /** HTTP status code. */
  status: number;
  /** Header name/value pairs; names are lower-case; a name may repeat. */
  headers: [name: string, value: string][];
  /** The body, byte for byte. */
  body: Uint8Array;
}

/** What a claim asks for. */
export interface ClaimInput {
  /** The scoped, hashed key. Stores may use it as their storage key as it is. */
  key: string;
  /** The request fingerprint the key is bound to. */
  fingerprint: string;
  /** How long the claimant owns the key before another claim may take it over, in ms. */
  leaseMs: number;
  /** How long the record is kept (from its last write), in ms. */
  ttlMs: number;
}

/**
 * The outcome of {@link IdempotencyStore.claim}.
 * - `acquired`: the caller owns the key under `token`; `steps` holds the recovery points an
 *   earlier owner saved (JSON text by step name); `recovered` is true when a lease expired and
 *   this claim took the key over.
 * - `replay`: the first request completed; here is its response.
 * - `in_flight`: another owner holds a live lease; `retryAfterMs` is the time until it passes.
 * - `mismatch`: the key is bound to another fingerprint.
 */
export type ClaimResult =
  | { status: 'acquired'; token: number; steps: Record<string, string>; recovered: boolean }
  | { status: 'replay'; response: StoredResponse }
  | { status: 'in_flight'; retryAfterMs: number }
  | { status: 'mismatch' };

/** The outcome of a fenced write: `'ok'`, or `'stale'` when the token no longer owns the record. */
export type FencedResult = 'ok' | 'stale';

/**
 * Where idempo keeps its records. Implement this to add a store; run {@link storeContractCases}
 * against it to prove it.
 *
 * Expected outcomes are returned as tagged results; methods throw only when the store itself
 * fails (unreachable, timed out), which the engine turns into `503` or fail-open.
 *
 * @example
 * ```ts
 * const result = await store.claim({ key, fingerprint, leaseMs: 60_000, ttlMs: 86_400_000 });
 * if (result.status === 'acquired') {
 *   await store.complete(key, result.token, { status: 201, headers: [], body: new Uint8Array() }, 86_400_000);
 * }
 * ```
 */
export interface IdempotencyStore {
  /** Atomically claims `key`: see {@link ClaimResult}. */
  claim(input: ClaimInput): Promise<ClaimResult>;
  /** Stores the response and moves the record to `completed`, kept for `ttlMs`. Fenced. */
  complete(key: string, token: number, response: StoredResponse, ttlMs: number): Promise<FencedResult>;
  /** Moves the record to `released` (kept for `ttlMs`, steps kept) so a retry can run. Fenced. */
  release(key: string, token: number, ttlMs: number): Promise<FencedResult>;
  /** Extends the lease to `leaseMs` from now. Fenced. */
  renew(key: string, token: number, leaseMs: number): Promise<FencedResult>;
  /** Saves a recovery point's result (JSON text) under the current owner. Fenced. */
  saveStep(key: string, token: number, name: string, value: string): Promise<FencedResult>;
  /**
   * Optional: resolves when the record under `key` may have changed (completed or released),
   * or after `timeoutMs`, whichever is first. Stores with a notification channel (Redis pub/sub,
   * PostgreSQL LISTEN/NOTIFY) implement it so waiting duplicates wake at once; without it the
   * engine polls.
   */
  waitForChange?(key: string, timeoutMs: number): Promise<void>;
  /** Optional: frees what the store itself opened (timers, its own connections). Never closes a client the user passed in. */
  close?(): Promise<void>;
  /**
   * Optional: resolves when the backend answers a trivial command (Redis `PING`, PostgreSQL
   * `SELECT 1`) and rejects when it cannot be reached. Health checks call it (the gateway's
   * `/healthz`), never the request path. A store without it (memory, SQLite: in-process, nothing
   * to reach) counts as reachable.
   *
   * @example
   * ```ts
   * const reachable = await store.ping?.().then(() => true, () => false) ?? true;
   * ```
   */
  ping?(): Promise<void>;
  /**
   * Optional, for stores that need no I/O (the memory store): the same `claim` and `complete`,
   * answering synchronously. The engine then uses them instead, so a request is claimed and its
   * response stored and sent in one turn of the event loop, without two promise turns, and
   * frameworks that wait for a response to finish (Fastify, for a handler that returns `reply`)
   * see it finished at once. They must behave exactly as the asynchronous methods do, and throw
   * where those reject.
   */
  readonly sync?: SyncStoreOperations;
}

/**
 * The synchronous `claim` and `complete` of a store that needs no I/O: see
 * {@link IdempotencyStore.sync}. `store` names the store they belong to; the engine uses them
 * only on that very object, so a wrapper of the store (spread, `Object.create`, a Proxy) that
 * replaces `claim` or `complete` is never bypassed.
 */
export interface SyncStoreOperations {
  readonly store: IdempotencyStore;
  claim(input: ClaimInput): ClaimResult;
  complete(key: string, token: number, response: StoredResponse, ttlMs: number): FencedResult;
}

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
];
