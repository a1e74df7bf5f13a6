/**
 * The store contract: what every idempo store must do. The engine calls it, every store
 * implements it, the gateway passes stores around by it; the suite of cases that proves a store
 * keeps it is `storeContractCases` in src/stores/contract.ts (`idempo/contract`).
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
 * Where idempo keeps its records. Implement this to add a store; run `storeContractCases` from
 * `idempo/contract` against it to prove it.
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
   * answering synchronously. The engine then uses them instead: the claims asked for in one turn
   * of the event loop are taken together at its check phase, and a response is stored without a
   * promise turn, so frameworks that wait for a response to finish (Fastify, for a handler that
   * returns `reply`) see it finished at once. They must behave exactly as the asynchronous
   * methods do, and throw where those reject.
   */
  readonly sync?: SyncStoreOperations;
  /**
   * Optional, for operations (`idempo keys`, the gateway's admin routes): the record under `key`
   * (the scoped, hashed key, as the engine hands it to `claim`), or `undefined` when there is
   * none or it has expired. Never on the request path.
   */
  inspect?(key: string): Promise<RecordInfo | undefined>;
  /**
   * Optional, for operations: one page of records, filtered by state and age; pass the page's
   * `cursor` back for the next one. A record written while a listing runs may or may not be in
   * it. Stores that list in key order never list a record twice; Redis, which lists with `SCAN`,
   * may (rarely, while its keyspace is resized).
   */
  list?(query?: RecordQuery): Promise<RecordPage>;
  /**
   * Optional, for operations: deletes the record under `key`, so the next request with that key
   * runs as new (a customer may retry a stored `4xx`, say). A live in-flight record is refused
   * (`'in_flight'`) unless `force` is set: its owner may still be running, and a retry would then
   * run beside it. A forced delete fences the owner out: its completion is refused as stale.
   */
  delete?(key: string, options?: { force?: boolean }): Promise<DeleteResult>;
  /**
   * Optional, for operations (re-encryption, `idempo keys reencrypt`): replaces the response of a
   * completed record whose stored body is byte for byte `expectedBody`, keeping its fingerprint and
   * expiry. A compare-and-swap: a record that is gone, expired, no longer completed or holds
   * another body is left alone (`'changed'`). Callers write bodies unique to each write (a sealed
   * envelope with a random IV), so an equal body means the same completion.
   */
  rewriteResponse?(key: string, expectedBody: Uint8Array, response: StoredResponse): Promise<RewriteResult>;
  /**
   * Optional, for stores whose records live in the application's own database (PostgreSQL, and
   * SQLite given the application's connection): runs `work` on a connection of that database,
   * inside a transaction, and in the same transaction saves what `work` returned (JSON text) as
   * the step `step.name` of `step.key`, fenced by `step.token` as `saveStep` is. So the
   * application's writes and the step commit together or not at all:
   * - `'ok'`: `work` and the step committed together.
   * - `'stale'`: the token no longer owns the record; the transaction was rolled back, `work`'s
   *   writes with it.
   * - rejects with what `work` threw (rolled back), or with the store's error (a failed `COMMIT`
   *   may have landed or not: either way `work` and the step went together).
   *
   * With `step` undefined (a request idempo does not protect) it is a plain transaction.
   * `ctx.transaction()` calls it; the engine keeps the step like any other.
   *
   * @example
   * ```ts
   * const outcome = await store.transaction?.({ key, token, name: 'transaction:1' }, async (client) => {
   *   await (client as pg.PoolClient).query('INSERT INTO orders (id) VALUES ($1)', [id]);
   *   return JSON.stringify({ id });
   * });
   * ```
   */
  transaction?(step: TransactionStep | undefined, work: TransactionWork): Promise<FencedResult>;
}

/** The step {@link IdempotencyStore.transaction} saves with the application's writes. */
export interface TransactionStep {
  /** The scoped, hashed key of the record. */
  key: string;
  /** The fencing token of the execution that runs the transaction. */
  token: number;
  /** The step's name: the result is kept under it, as `ctx.step` keeps its results. */
  name: string;
}

/**
 * The application's part of a transaction: given the store's connection to the application's
 * database (a `pg` client, a better-sqlite3 `Database`), does its writes and returns the JSON text
 * to keep as the step. Synchronous stores (SQLite) refuse a promise.
 */
export type TransactionWork = (client: unknown) => string | PromiseLike<string>;

/** What {@link IdempotencyStore.rewriteResponse} did: `'ok'`, or `'changed'` when the record was not the one expected. */
export type RewriteResult = 'ok' | 'changed';

/** A record's state, as {@link IdempotencyStore.inspect} and {@link IdempotencyStore.list} report it. */
export type RecordState = 'in_flight' | 'completed' | 'released';

/**
 * One record as operations see it. The raw `Idempotency-Key` is not in it: stores keep only the
 * hash of scope and key, so a record is found by hashing the key a client sent (with its scope)
 * the way the engine does, never by reading keys back.
 */
export interface RecordInfo {
  /** The scoped, hashed key the record is kept under. */
  key: string;
  state: RecordState;
  /**
   * The fencing token of the record's current (or last) owner. Always there for a record in
   * flight or released; a store may not keep it once a record completed (Redis does not).
   */
  token?: number;
  /**
   * When this lifetime of the record began, in ms since the epoch, on the clock of the store that
   * created it (stores that keep no creation time derive it from the token, which starts at that
   * clock's time: late by a millisecond per takeover). Missing where the token is.
   */
  createdAt?: number;
  /** In flight: when the lease passes, in ms since the epoch. Past it, the next claim takes the key over. */
  leaseUntil?: number;
  /** When the record expires, in ms since the epoch. */
  expiresAt: number;
  /** Names of the steps saved under the record (`ctx.step`). */
  steps: string[];
  /** Completed: the stored response. */
  response?: StoredResponse;
}

/** Which records {@link IdempotencyStore.list} returns. */
export interface RecordQuery {
  /** Only records in this state. */
  state?: RecordState;
  /**
   * Only records whose lifetime began at least this long ago, in ms (stuck keys: with
   * `state: 'in_flight'`). A record without `createdAt` never matches.
   */
  olderThanMs?: number;
  /** Most records in one page; a store may return fewer (and still give a cursor). Default 100. */
  limit?: number;
  /** Where to go on: the `cursor` of the previous page. */
  cursor?: string;
}

/** One page of {@link IdempotencyStore.list}. */
export interface RecordPage {
  records: RecordInfo[];
  /** Pass it back for the next page; absent on the last one. */
  cursor?: string;
}

/** What {@link IdempotencyStore.delete} did. */
export type DeleteResult = 'deleted' | 'absent' | 'in_flight';

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
