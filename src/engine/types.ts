/**
 * The engine's neutral request/response shapes, options, context and events. Adapters translate
 * their framework's objects to and from these; nothing here knows a framework or a store.
 *
 * @module
 */
import type { NamedSignatureKey, SignatureKeyLookup } from '../signatures/index.js';
import type { Duration, IdempotencyError, IdempotencyStore, StoredResponse } from '../vocabulary/index.js';

/** A body an adapter already parsed (for example Express after `express.json()`); fingerprinted as canonical JSON. */
export interface ParsedBody {
  /** The parsed JSON value. */
  readonly parsed: unknown;
}

/**
 * The request as the engine sees it. Adapters build one per request without copying more than
 * they must: headers are looked up on demand and the body is read only for keyed requests.
 */
export interface IdempotencyRequest {
  /** Upper-case HTTP method. */
  readonly method: string;
  /** Origin-form target: path and query, e.g. `/payments?currency=eur`. */
  readonly url: string;
  /** Returns a header's value (name in lower case), several values joined with `, `. */
  header(name: string): string | undefined;
  /**
   * Reads the body. Called at most once, and only for requests that carry a key. Returns `null`
   * when the request has no body. Must reject with {@link IdempotencyBodyTooLargeError} as soon
   * as more than `maxBytes` arrive.
   */
  body(maxBytes: number): Promise<Uint8Array | ParsedBody | null>;
  /**
   * The route pattern the framework matched (`/payments/:id`), when it knows one: observers label
   * metrics by it, never by the raw path. Adapters set it where the framework gives one.
   */
  readonly route?: string | undefined;
  /** The client's address, when the adapter knows it: key usage groups by it when nothing else names the caller. */
  readonly remoteAddress?: string | undefined;
}

/** A response as the engine produces or receives it; the same shape the store keeps. */
export type IdempotencyResponse = StoredResponse;

/** What an error formatter returns: status, headers and body of an idempo error response. */
export type ErrorFormatter = (error: IdempotencyError, request: IdempotencyRequest) => IdempotencyResponse;

/** The handler's view of the idempotent execution it runs in. */
export interface IdempotencyContext {
  /** The client's key, as parsed from the header. */
  readonly key: string;
  /** The scoped, hashed key under which the store keeps the record. */
  readonly storeKey: string;
  /** The fencing token this execution owns. */
  readonly token: number;
  /** True when an earlier owner's lease expired (it crashed or stalled) and this run took over. */
  readonly recovered: boolean;
  /** Aborted when this execution loses its lease: its result will not be stored. */
  readonly signal: AbortSignal;
  /**
   * Runs `fn` once per key, across retries and crashes: its JSON-serialisable result is stored
   * under the current token, and a later execution of the same key (after a release or a crash)
   * gets the stored result back instead of running `fn` again.
   *
   * @example
   * ```ts
   * const charge = await ctx.step('charge', () => payments.charge(card, amount));
   * ```
   */
  step<T>(name: string, fn: () => T | Promise<T>): Promise<T>;
  /**
   * Runs `fn` in a transaction of the application's database, the one the store keeps its
   * records in (the PostgreSQL store's pool; the SQLite store's `database`), and commits its
   * writes together with a step holding `fn`'s JSON-serialisable result: both or neither. A
   * later execution of the key (after a crash, a release, a lost lease) gets the stored result
   * back without running `fn` again, so a committed effect never runs twice; one whose commit
   * never happened runs again. A stale owner's transaction (lease lost, key taken over) is
   * rolled back and this rejects with `IdempotencyLeaseLostError`.
   *
   * `client` is a `pg` client in an open transaction (never `BEGIN`, `COMMIT`, `ROLLBACK` or
   * `release()` it), or the better-sqlite3 `Database`, where `fn` must be synchronous.
   * Transactions without a `name` are named by their order in the run (`transaction:1`, …), so
   * call them in the same order on every run, or name them. Stores that cannot (memory, Redis,
   * encrypted) reject with `IdempotencyTransactionUnsupportedError`. See docs/transactions.md.
   *
   * @example
   * ```ts
   * const order = await ctx.transaction(async (client: pg.PoolClient) => {
   *   const { rows } = await client.query('INSERT INTO orders (sku) VALUES ($1) RETURNING id', [sku]);
   *   return { id: rows[0].id };
   * });
   * ```
   */
  transaction<T, C = unknown>(fn: (client: C) => T | Promise<T>): Promise<T>;
  transaction<T, C = unknown>(name: string, fn: (client: C) => T | Promise<T>): Promise<T>;
}

/** The kinds of {@link IdempotencyEvent}. */
export type IdempotencyEventType =
  | 'executed'
  | 'replayed'
  | 'conflict'
  | 'mismatch'
  | 'invalid_key'
  | 'invalid_signature'
  | 'store_error'
  | 'released'
  | 'recovered'
  | 'lease_lost'
  | 'outcome_unknown'
  | 'rate_limited';

/** One event per outcome, for logs and metrics. */
export interface IdempotencyEvent {
  /** What happened. */
  type: IdempotencyEventType;
  /** Request method. */
  method: string;
  /** Request target (path and query). */
  url: string;
  /** The client's key, when there was a valid one. */
  key?: string;
  /** The response status the client got, when the engine decided it. */
  status?: number;
  /**
   * Why a key was released or a store error happened (e.g. `'status'`, `'threw'`, `'client_gone'`, `'response_too_large'`, `'claim'`),
   * or which limit refused a request (`'in_flight'`, `'new_keys'`).
   */
  reason?: string;
  /**
   * For `store_error`: what the engine did. `'fail-closed'` or `'fail-open'` for a claim;
   * `'retrying'` when a completion or a step's save failed and is being tried again (the key kept);
   * `'result_lost'` when it still failed two leases after the last renewal (a retry after the lease
   * recovers the key); `'response_sent'` for a release or renewal that failed.
   */
  action?: 'fail-closed' | 'fail-open' | 'retrying' | 'result_lost' | 'response_sent';
  /** The error behind a `store_error` or a thrown handler. */
  error?: unknown;
  /** Time from the start of `begin` to the event, in ms. */
  durationMs: number;
}

/**
 * Options of {@link createIdempotency}. Only `store` is required.
 */
export interface IdempotencyOptions {
  /** Where records live: `createMemoryStore()`, `createSqliteStore()`, `createRedisStore()`, `createPostgresStore()`. */
  store: IdempotencyStore;
  /**
   * Methods that take part; others pass through untouched.
   * @default ['POST', 'PATCH']
   */
  methods?: readonly string[];
  /**
   * Whether a request of a covered method must carry a key (`400` otherwise). A function decides per request.
   * @default false
   */
  required?: boolean | ((request: IdempotencyRequest) => boolean);
  /**
   * The request header that carries the key.
   * @default 'idempotency-key'
   */
  header?: string;
  /**
   * Longest accepted key, in characters.
   * @default 255
   */
  maxKeyLength?: number;
  /**
   * How long an execution owns its key before a duplicate may take it over; renewed while the handler runs.
   * @default '60s'
   */
  lease?: Duration;
  /**
   * How long completed responses are kept.
   * @default '24h'
   */
  ttl?: Duration;
  /**
   * What a duplicate gets while the first request is still running: `'reject'` → `409` with
   * `Retry-After`; `'wait'` → waits up to `waitTimeout` and replays the original's response.
   * @default 'reject'
   */
  concurrent?: 'reject' | 'wait';
  /**
   * How long a duplicate waits with `concurrent: 'wait'` before it gets `409`.
   * @default '10s'
   */
  waitTimeout?: Duration;
  /**
   * Handler response statuses that release the key instead of storing the response: a retry runs again.
   * Numbers, or `'5xx'`-style classes. `[]` keeps everything (Stripe's rule).
   * @default ['5xx']
   */
  releaseOn?: readonly (number | `${1 | 2 | 3 | 4 | 5}xx`)[];
  /**
   * When the store fails: `'fail-closed'` answers `503` and runs nothing; `'fail-open'` runs the
   * handler unprotected and emits a `store_error` event.
   * @default 'fail-closed'
   */
  onStoreError?: 'fail-closed' | 'fail-open';
  /**
   * Status for a key reused with a different request: the IETF draft's `422` or Stripe's `400`.
   * @default 422
   */
  mismatchStatus?: 400 | 422;
  /**
   * Largest request body fingerprinted, in bytes; larger keyed requests get `413`.
   * @default 1048576 (1 MiB)
   */
  maxBodyBytes?: number;
  /**
   * Largest response body stored, in bytes. A larger one is still sent; its key is kept completed
   * (never run again within the ttl) and a retry gets `410` (`IDEMPO_RESPONSE_NOT_KEPT`) naming
   * the original status.
   * @default 1048576 (1 MiB)
   */
  maxResponseBytes?: number;
  /**
   * How long a response is held while idempo retries a completion the store failed, before the
   * client is told its result could not be stored (`503`, `IDEMPO_RESULT_NOT_STORED`). idempo
   * stops renewing the lease then and keeps trying, fenced, for up to two leases after its last
   * renewal: a store back before a retry takes the key over still keeps the result.
   * @default '5s'
   */
  completeTimeout?: Duration;
  /**
   * Response headers not stored (lower case). Hop-by-hop headers are never stored whatever this says.
   * @default { exclude: ['set-cookie', 'date'] }
   */
  replayHeaders?: { exclude?: readonly string[] };
  /**
   * Replaces the request fingerprint. Requests with the same key and a different fingerprint get `mismatch`.
   * Lone surrogates in the string are replaced with U+FFFD before it reaches the store, as a store
   * keeping UTF-8 text would read it back, so every store compares it alike.
   * @default SHA-256 of method, path, sorted query, canonical JSON or raw body, and a hash of Authorization
   */
  fingerprint?: (request: IdempotencyRequest, body: Uint8Array | ParsedBody | null) => string | Promise<string>;
  /**
   * Namespaces keys, e.g. per tenant or principal: the same key under two scopes is two records.
   * @default no scope
   */
  scope?: (request: IdempotencyRequest) => string | undefined;
  /**
   * Shape of idempo's own error responses: RFC 9457 problem+json, Stripe's `{"error": {...}}`, or a function.
   * @default 'problem'
   */
  errorFormat?: 'problem' | 'stripe' | ErrorFormatter;
  /**
   * Verify HTTP Message Signatures (RFC 9421) on keyed requests before anything is claimed: the
   * signature must cover the method, the target, the key header and, for a body, its
   * `Content-Digest` (RFC 9530), so a key cannot be moved to another request. Unsigned or bad
   * requests get `401` (`IDEMPO_SIGNATURE_MISSING`, `IDEMPO_SIGNATURE_INVALID`,
   * `IDEMPO_SIGNATURE_EXPIRED`). Needs the raw body: a body a framework already parsed cannot
   * have its digest checked (mount idempo before body parsers).
   * @default none (requests are not verified)
   */
  signatures?: SignatureOptions;
  /**
   * Per-scope limits on keyed requests, checked before the claim: a request over one gets `429`
   * (`IDEMPO_RATE_LIMITED`) with `Retry-After`, and nothing is claimed, run or touched. A scope is
   * the `scope` option's value, else the client's address (where the adapter knows it), else one
   * scope shared by all. Kept in this process's memory: with N instances a scope gets N times the
   * limits.
   * @default none (no limits)
   */
  limits?: LimitOptions;
  /** Receives one event per outcome. Must not throw; errors it throws are ignored. */
  onEvent?: (event: IdempotencyEvent) => void;
  /**
   * Observers that watch the engine from outside: metrics (`idempoMetrics` from `idempo/metrics`),
   * traces (`idempoTracing` from `idempo/tracing`), key usage (`createKeyUsage` from `idempo/usage`).
   * @default []
   */
  observe?: IdempotencyObserver | readonly IdempotencyObserver[];
}

/**
 * Options of {@link IdempotencyOptions.signatures}.
 *
 * @example
 * ```ts
 * createIdempotency({
 *   store,
 *   signatures: { keys: [{ keyid: 'client-1', alg: 'ed25519', key: publicJwk }], maxAge: '2m' },
 * });
 * ```
 */
export interface SignatureOptions {
  /**
   * The keys signatures may name by `keyid`: a list (each with its `keyid`; `parseKeySet()` reads
   * a JWK Set file into one), or a function that looks a key up (a database, a KMS). A lookup that
   * returns `undefined` makes the signature invalid; one that throws fails the request.
   */
  keys: readonly NamedSignatureKey[] | SignatureKeyLookup;
  /**
   * Whether a keyed request must be signed. `false` verifies signed requests and lets unsigned
   * ones through (a migration).
   * @default true
   */
  required?: boolean;
  /**
   * How old a signature's `created` may be. A signed request replayed later than this is refused
   * (`IDEMPO_SIGNATURE_EXPIRED`); within it, a replay of the same signed request carries the same
   * key and gets the stored response, never a second run.
   * @default '5m'
   */
  maxAge?: Duration;
  /**
   * How far a signature's `created` may be ahead of this server's clock.
   * @default '30s'
   */
  clockSkew?: Duration;
  /**
   * The scheme `@target-uri` is read with, where TLS ends before idempo (a load balancer).
   * Signatures that cover `@authority`, `@path` and `@query` (the client's default) need none.
   * @default 'https'
   */
  scheme?: 'http' | 'https';
}

/**
 * Options of {@link IdempotencyOptions.limits}: per scope, in this process. Set `inFlight`,
 * `newKeys` or both.
 *
 * @example
 * ```ts
 * createIdempotency({
 *   store,
 *   scope: (request) => request.header('x-tenant-id'),
 *   limits: { inFlight: 20, newKeys: { max: 600, window: '1m' } },
 * });
 * ```
 */
export interface LimitOptions {
  /**
   * Keys one scope may have in flight at once: claimed, and their run not ended yet (a duplicate
   * waiting with `concurrent: 'wait'` holds a place too, while it waits).
   * @default none (no limit)
   */
  inFlight?: number;
  /**
   * New keys one scope may claim within a sliding `window` (counted in tenths of it). Every claim
   * that starts a run counts, a released key run again included; replays, conflicts and
   * mismatches do not.
   * @default none (no limit)
   */
  newKeys?: { max: number; window: Duration };
  /**
   * Most scopes tracked at once; past it the least recently seen scope with no key in flight is
   * forgotten (its window starts afresh). Scopes with keys in flight are never forgotten.
   * @default 10000
   */
  maxScopes?: number;
}

/**
 * Watches an engine from outside, through three optional hooks; the engine knows no metrics or
 * tracing library. Made by `idempoMetrics()`, `idempoTracing()` or `createKeyUsage()`.
 *
 * @example
 * ```ts
 * const idem = createIdempotency({ store, observe: idempoMetrics({ registry }) });
 * ```
 */
export interface IdempotencyObserver {
  /** Wraps the store once, when the engine is made (e.g. to time each call). The wrapper must keep the contract. */
  wrapStore?(store: IdempotencyStore): IdempotencyStore;
  /** Receives each event with the request it is about, after `onEvent`. Must not throw; what it throws is ignored. */
  onEvent?(event: IdempotencyEvent, request: IdempotencyRequest): void;
  /** Wraps `begin` once, when the engine is made (e.g. to run each request under a trace span). */
  wrapBegin?(
    begin: (request: IdempotencyRequest) => Promise<Decision>,
  ): (request: IdempotencyRequest) => Promise<Decision>;
}

/** What {@link Idempotency.begin} decided for a request. */
export type Decision =
  | {
      /** Not covered (method, no key, or fail-open): run the handler as if idempo were not there. */
      readonly action: 'pass';
      /** Set when the engine already read the body before deciding (fail-open): hand it to the handler. */
      readonly body?: Uint8Array | ParsedBody | null;
    }
  | {
      /** Send this response (a replay or an idempo error) and do not run the handler. */
      readonly action: 'respond';
      readonly response: IdempotencyResponse;
    }
  | Execution;

/** The handler must run under the claimed key; report its result with `commit` or `abort`. */
export interface Execution {
  readonly action: 'execute';
  /** The request body the engine read (to fingerprint it), for the adapter to hand to the handler. */
  readonly body: Uint8Array | ParsedBody | null;
  /** The context to pass to the handler. */
  readonly context: IdempotencyContext;
  /**
   * Stores the handler's response (or releases the key for `releaseOn` statuses). Pass `body: null`
   * when the response grew past `maxResponseBytes` and was not captured: the key is kept
   * completed with a record that says so (a retry gets `410`, `IDEMPO_RESPONSE_NOT_KEPT`), never
   * run again. Never throws. A store that fails here is retried, fenced, with the lease kept.
   *
   * Resolves to a response to send instead, when the handler's own must not reach the client:
   * this execution lost its key to a newer one (`409`, `IDEMPO_LEASE_LOST`, so that the retry
   * replays the kept one), or its result could not be stored (`503`, `IDEMPO_RESULT_NOT_STORED`).
   * An adapter that already sent the headers must then abort the response (destroy the socket),
   * never end it: a client must not take a success that no retry would replay.
   */
  commit(response: CapturedResponse): Promise<IdempotencyResponse | undefined>;
  /**
   * `commit()` that finishes in the same turn of the event loop when the store answers
   * synchronously (the memory store): the outcome itself then, otherwise the promise `commit()`
   * returns. An adapter that holds the end of the response until it is stored ends it at once.
   */
  commitNow(response: CapturedResponse): IdempotencyResponse | undefined | Promise<IdempotencyResponse | undefined>;
  /**
   * The handler threw or the response could not be produced: releases the key, since the
   * application said the work failed. Never throws.
   *
   * An {@link IdempotencyError} whose `outcomeUnknown` is true (an upstream that timed out or
   * hung up after it had the request) is not a failure but an unknown: the key is kept in flight
   * instead, the lease is no longer renewed, and once it passes a retry takes the key over as
   * `recovered`.
   */
  abort(error: unknown): Promise<void>;
  /**
   * The client went away before the response ended. The work goes on: whatever the handler ends
   * its response with is still stored, and the retry replays it. The lease is renewed after this
   * only while work passed to {@link Execution.track} is pending, so a key is never blocked for
   * longer than one lease after the work stops.
   */
  clientGone(): void;
  /**
   * The handler's work, as far as the adapter can see it (the promise a listener returned): while
   * it is pending the lease is renewed even after the client has gone.
   */
  track(work: PromiseLike<unknown>): void;
}

/** A handler's response as an adapter captured it, for {@link Execution.commit}; `body: null` when it outgrew `maxResponseBytes`. */
export interface CapturedResponse {
  status: number;
  headers: [string, string][];
  body: Uint8Array | null;
}

/** An idempotency engine, made by {@link createIdempotency}. */
export interface Idempotency {
  /**
   * Runs `handler` for `request` under the protocol: first requests run it, retries replay, duplicates
   * and mismatches are refused.
   *
   * @example
   * ```ts
   * const response = await idem.handle(request, async (req, ctx) => Response.json({ ok: true }, { status: 201 }));
   * ```
   */
  handle(
    request: Request,
    handler: (request: Request, context: IdempotencyContext) => Response | Promise<Response>,
  ): Promise<Response>;
  /**
   * The adapter-facing half of `handle`: decides what to do with a neutral request. Adapters call it,
   * then run the handler for `execute` and report back with `commit`/`abort`.
   */
  begin(request: IdempotencyRequest): Promise<Decision>;
  /**
   * Formats an idempo error the way `errorFormat` says, with `Retry-After` when the error carries
   * `retryAfterMs`; adapters (and the gateway) answer their own errors with it.
   */
  formatError(error: IdempotencyError, request: IdempotencyRequest): IdempotencyResponse;
  /** The limits adapters must enforce while capturing. */
  readonly limits: { readonly maxBodyBytes: number; readonly maxResponseBytes: number };
}
