/**
 * idempo's errors: one base class, one subclass per case, each with a stable `code`, the HTTP
 * `status` it answers with and an RFC 9457 problem `type`. Codes and types are public forever;
 * `errors.test.ts` pins the list.
 *
 * Every coded error lives here, also those only one face raises (the client's, the PostgreSQL
 * store's, the gateway's): one list to read and pin, and no face has to reach into another for
 * the base class. Each face's subpath exports its own; `idempo` exports the engine's.
 *
 * @module
 */

/** Base URI of idempo's problem types; each case appends its slug. */
export const PROBLEM_BASE = 'https://idempo.dev/problems/';

/** Options every idempo error accepts. */
export interface IdempotencyErrorOptions {
  /** The underlying error, if any. */
  cause?: unknown;
  /** How long a client should wait before it retries; answered as `Retry-After`. */
  retryAfterMs?: number;
}

/**
 * Base class of every error idempo raises or answers with.
 *
 * @example
 * ```ts
 * try { await store.claim(input); } catch (err) {
 *   if (err instanceof IdempotencyError) console.error(err.code);
 * }
 * ```
 */
export class IdempotencyError extends Error {
  /** Stable machine-readable code, e.g. `IDEMPO_KEY_INVALID`. */
  readonly code: string = 'IDEMPO_ERROR';
  /** The HTTP status idempo answers with for this error. */
  readonly status: number = 500;
  /** The RFC 9457 problem `type` URI. */
  readonly type: string = `${PROBLEM_BASE}error`;
  /** Short human title for the problem body. */
  readonly title: string = 'Idempotency error';
  /**
   * True when the work may have happened and idempo cannot know (an upstream that has the
   * request timed out or hung up). A handler that throws such an error keeps its key in flight
   * instead of releasing it: nothing is stored, the lease is no longer renewed, and once it passes
   * a retry takes the key over as `recovered`. Never twice: an unknown outcome is not a failure.
   */
  readonly outcomeUnknown: boolean = false;
  /**
   * How long a client should wait before it retries, when the error says: idempo's response for
   * it carries `Retry-After`, whichever way it is answered (the engine, an adapter, the gateway).
   */
  readonly retryAfterMs: number | undefined;

  constructor(message: string, options: IdempotencyErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.retryAfterMs = options.retryAfterMs;
  }
}

/** The request needs an `Idempotency-Key` header and has none. */
export class IdempotencyKeyMissingError extends IdempotencyError {
  override readonly code = 'IDEMPO_KEY_MISSING';
  override readonly status = 400;
  override readonly type = `${PROBLEM_BASE}key-missing`;
  override readonly title = 'Idempotency-Key header required';
}

/** The `Idempotency-Key` is empty, too long or not visible ASCII. */
export class IdempotencyKeyInvalidError extends IdempotencyError {
  override readonly code = 'IDEMPO_KEY_INVALID';
  override readonly status = 400;
  override readonly type = `${PROBLEM_BASE}key-invalid`;
  override readonly title = 'Invalid Idempotency-Key';
}

/** A request with the same key is still being processed. */
export class IdempotencyConflictError extends IdempotencyError {
  override readonly code = 'IDEMPO_CONFLICT';
  override readonly status = 409;
  override readonly type = `${PROBLEM_BASE}conflict`;
  override readonly title = 'A request with this Idempotency-Key is in progress';
}

/** The key was first used for a different request (the fingerprint differs). */
export class IdempotencyMismatchError extends IdempotencyError {
  override readonly code = 'IDEMPO_MISMATCH';
  override readonly status: number = 422;
  override readonly type = `${PROBLEM_BASE}mismatch`;
  override readonly title = 'Idempotency-Key reused for a different request';

  constructor(message: string, options: IdempotencyErrorOptions & { status?: number } = {}) {
    super(message, options);
    if (options.status !== undefined) this.status = options.status;
  }
}

/**
 * The API requires signed requests (`signatures`) and this one carries no HTTP Message Signature
 * (`Signature-Input` and `Signature`, RFC 9421). Nothing was claimed or run.
 */
export class IdempotencySignatureMissingError extends IdempotencyError {
  override readonly code = 'IDEMPO_SIGNATURE_MISSING';
  override readonly status = 401;
  override readonly type = `${PROBLEM_BASE}signature-missing`;
  override readonly title = 'Signature required';
}

/**
 * The request's signature does not verify: malformed fields, an unknown `keyid`, a wrong
 * signature, a `Content-Digest` that does not match the body, or a signature that leaves out a
 * component it must cover (the method, the target, the `Idempotency-Key`, the digest). Nothing
 * was claimed or run.
 */
export class IdempotencySignatureInvalidError extends IdempotencyError {
  override readonly code = 'IDEMPO_SIGNATURE_INVALID';
  override readonly status = 401;
  override readonly type = `${PROBLEM_BASE}signature-invalid`;
  override readonly title = 'Invalid signature';
}

/**
 * The signature is outside its window: `created` older than `maxAge` (or missing, or in the
 * future beyond `clockSkew`), or `expires` passed. A replay of an old signed request ends here.
 * Nothing was claimed or run; the client signs again and retries.
 */
export class IdempotencySignatureExpiredError extends IdempotencyError {
  override readonly code = 'IDEMPO_SIGNATURE_EXPIRED';
  override readonly status = 401;
  override readonly type = `${PROBLEM_BASE}signature-expired`;
  override readonly title = 'Signature expired';
}

/**
 * The request's scope (its tenant or principal, else its client address) is at one of its limits
 * (`limits`): too many keys in flight at once, or too many new keys within the window. Refused
 * before anything was claimed: no record was created or touched, nothing ran. `Retry-After` says
 * when to try again; a retry then runs as a first request would (or gets its replay).
 */
export class IdempotencyRateLimitedError extends IdempotencyError {
  override readonly code = 'IDEMPO_RATE_LIMITED';
  override readonly status = 429;
  override readonly type = `${PROBLEM_BASE}rate-limited`;
  override readonly title = 'Too many idempotent requests';
}

/** The request body is larger than `maxBodyBytes`, so it cannot be fingerprinted. */
export class IdempotencyBodyTooLargeError extends IdempotencyError {
  override readonly code = 'IDEMPO_BODY_TOO_LARGE';
  override readonly status = 413;
  override readonly type = `${PROBLEM_BASE}body-too-large`;
  override readonly title = 'Request body too large';
}

/** The store could not be reached or failed; nothing was run. */
export class IdempotencyStoreUnavailableError extends IdempotencyError {
  override readonly code = 'IDEMPO_STORE_UNAVAILABLE';
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}store-unavailable`;
  override readonly title = 'Idempotency store unavailable';
}

/** The handler threw; the key was released so the client can retry. */
export class IdempotencyHandlerFailedError extends IdempotencyError {
  override readonly code = 'IDEMPO_HANDLER_FAILED';
  override readonly status = 500;
  override readonly type = `${PROBLEM_BASE}handler-failed`;
  override readonly title = 'The request failed and may be retried';
}

/** The handler lost its lease (a newer owner took the key over), so its writes are refused. */
export class IdempotencyLeaseLostError extends IdempotencyError {
  override readonly code = 'IDEMPO_LEASE_LOST';
  override readonly status = 409;
  override readonly type = `${PROBLEM_BASE}lease-lost`;
  override readonly title = 'The idempotency lease was lost';
}

/** The gateway could not reach its upstream; nothing happened there and the key was released. */
export class IdempotencyUpstreamUnreachableError extends IdempotencyError {
  override readonly code = 'IDEMPO_UPSTREAM_UNREACHABLE';
  override readonly status = 502;
  override readonly type = `${PROBLEM_BASE}upstream-unreachable`;
  override readonly title = 'Upstream unreachable';
}

/**
 * The upstream accepted the request but did not answer in time; the outcome is unknown. The
 * gateway answers its client with this while it keeps waiting for the upstream, so the key stays
 * in flight and a late answer is still stored for the retry to replay.
 */
export class IdempotencyUpstreamTimeoutError extends IdempotencyError {
  override readonly code = 'IDEMPO_UPSTREAM_TIMEOUT';
  override readonly status = 504;
  override readonly type = `${PROBLEM_BASE}upstream-timeout`;
  override readonly title = 'Upstream timed out';
  override readonly outcomeUnknown = true;
}

/**
 * The upstream connection failed after the request was sent (a reset, a hang-up, a body cut
 * short): the upstream may have done the work, so the key is kept in flight, not released.
 */
export class IdempotencyUpstreamFailedError extends IdempotencyError {
  override readonly code = 'IDEMPO_UPSTREAM_FAILED';
  override readonly status = 502;
  override readonly type = `${PROBLEM_BASE}upstream-failed`;
  override readonly title = 'Upstream failed after the request was sent';
  override readonly outcomeUnknown = true;
}

/**
 * The handler ran, but its result could not be stored (the store failed at completion and kept
 * failing while idempo retried). The client does not get the success, since no retry could
 * replay it; the key stays in flight while idempo keeps trying, so a retry gets `409` and then
 * the replay, or after the lease a recovery.
 */
export class IdempotencyResultNotStoredError extends IdempotencyError {
  override readonly code = 'IDEMPO_RESULT_NOT_STORED';
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}result-not-stored`;
  override readonly title = 'The result could not be stored';
}

/**
 * What a retry gets when the first request completed with a response larger than
 * `maxResponseBytes`: the operation ran and is never run again within the ttl, but its body was
 * not kept. `originalStatus` names the status the first request was answered with.
 */
export class IdempotencyResponseNotKeptError extends IdempotencyError {
  override readonly code = 'IDEMPO_RESPONSE_NOT_KEPT';
  override readonly status = 410;
  override readonly type = `${PROBLEM_BASE}response-not-kept`;
  override readonly title = 'The response to this key was not kept';
  /** The status the first request was answered with. */
  readonly originalStatus: number | undefined;

  constructor(message: string, options: IdempotencyErrorOptions & { originalStatus?: number } = {}) {
    super(message, options);
    this.originalStatus = options.originalStatus;
  }
}

/** An option is invalid (thrown at setup, never per request). */
export class IdempotencyConfigInvalidError extends IdempotencyError {
  override readonly code = 'IDEMPO_CONFIG_INVALID';
  override readonly type = `${PROBLEM_BASE}config-invalid`;
  override readonly title = 'Invalid idempo configuration';
}

/** An optional dependency a feature needs (better-sqlite3, ioredis, pg, …) is not installed. */
export class IdempotencyDependencyMissingError extends IdempotencyError {
  override readonly code = 'IDEMPO_DEPENDENCY_MISSING';
  override readonly type = `${PROBLEM_BASE}dependency-missing`;
  override readonly title = 'Missing optional dependency';
}

/**
 * `ctx.transaction()` cannot run here, and nothing was run: the store keeps no records in the
 * application's database (memory, Redis, an encrypted store; a SQLite store without its
 * `database` option), the request is not protected by idempo, or the SQLite function returned a
 * promise (better-sqlite3 transactions are synchronous) or was called while the database was
 * already in a transaction. A programming error, not a request's: fix the code or the store.
 *
 * @example
 * ```ts
 * try { await ctx.transaction((db: Database) => insertOrder(db)); } catch (err) {
 *   if (err instanceof IdempotencyTransactionUnsupportedError) console.error(err.message);
 * }
 * ```
 */
export class IdempotencyTransactionUnsupportedError extends IdempotencyError {
  override readonly code = 'IDEMPO_TRANSACTION_UNSUPPORTED';
  override readonly type = `${PROBLEM_BASE}transaction-unsupported`;
  override readonly title = 'Transaction not supported here';
}

// Raised by one face only, exported from its subpath: `idempo/postgres`, `idempo/client`,
// `idempo/gateway`, `idempo/encryption`.

/**
 * The table the PostgreSQL store needs does not exist or has an older layout: run its migration
 * (`store.migrate()`, `migratePostgres(pool)` or `idempo migrate --store postgres://…`), or pass
 * `autoMigrate: true`.
 *
 * @example
 * ```ts
 * try { await store.claim(input); } catch (err) {
 *   if (err instanceof IdempotencyStoreNotMigratedError) await store.migrate();
 * }
 * ```
 */
export class IdempotencyStoreNotMigratedError extends IdempotencyError {
  override readonly code = 'IDEMPO_STORE_NOT_MIGRATED';
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}store-not-migrated`;
  override readonly title = 'Idempotency store not migrated';
}

/** Options of {@link IdempotencyRetriesExhaustedError}. */
export interface IdempotencyRetriesExhaustedErrorOptions extends IdempotencyErrorOptions {
  /** Attempts made, the first one included. */
  attempts: number;
  /** The key every attempt carried, if any. */
  idempotencyKey: string | undefined;
}

/**
 * Every attempt of a call failed without a response (network error, per-attempt timeout) and
 * the client stopped: `retry.limit`, `retry.maxRetryTime` or `shouldRetry` said so. `cause` is the
 * last attempt's error. The request may or may not have run on the server; sending it again
 * later with the same `idempotencyKey` is safe and tells you which.
 *
 * A call that ends on a retryable *status* is not an error: the last response is returned, as
 * `fetch` would. An abort rejects with the signal's reason, as `fetch` would.
 *
 * @example
 * ```ts
 * try {
 *   await idempotentFetch(url, { method: 'POST', body });
 * } catch (err) {
 *   if (err instanceof IdempotencyRetriesExhaustedError) queue.later(url, body, err.idempotencyKey);
 *   else throw err;
 * }
 * ```
 */
export class IdempotencyRetriesExhaustedError extends IdempotencyError {
  override readonly code = 'IDEMPO_RETRIES_EXHAUSTED';
  /** 503: when a server relays this failure, the client behind it may try again later. */
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}retries-exhausted`;
  override readonly title = 'Retries exhausted';
  /** Attempts made, the first one included. */
  readonly attempts: number;
  /** The key every attempt carried; resend with it to learn the outcome without running twice. */
  readonly idempotencyKey: string | undefined;

  constructor(message: string, options: IdempotencyRetriesExhaustedErrorOptions) {
    super(message, options);
    this.attempts = options.attempts;
    this.idempotencyKey = options.idempotencyKey;
  }
}

/**
 * A record of an encrypted store (`idempo/encryption`) failed authentication: its ciphertext was
 * altered, moved from another record, or sealed with a key the key set does not hold (or the
 * record was written before encryption was turned on). Never a replay: the engine answers
 * `503 IDEMPO_STORE_UNAVAILABLE` with this error as `cause` and runs nothing (fail-closed).
 *
 * @example
 * ```ts
 * try { await encrypted.inspect(key); } catch (err) {
 *   if (err instanceof IdempotencyRecordUnreadableError) console.error(err.message);
 * }
 * ```
 */
export class IdempotencyRecordUnreadableError extends IdempotencyError {
  override readonly code = 'IDEMPO_RECORD_UNREADABLE';
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}record-unreadable`;
  override readonly title = 'Stored idempotency record failed authentication';
}

/**
 * The gateway is shutting down (SIGTERM) and takes no new request; the ones it has are finishing.
 * Nothing was run: retry at once, on another instance (the load balancer stops sending here once
 * `/healthz` answers `503`).
 *
 * @example
 * ```ts
 * if (draining) writeResponse(res, idem.formatError(new IdempotencyGatewayDrainingError('draining'), request));
 * ```
 */
export class IdempotencyGatewayDrainingError extends IdempotencyError {
  override readonly code = 'IDEMPO_GATEWAY_DRAINING';
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}gateway-draining`;
  override readonly title = 'The gateway is shutting down';
}

// The names before each class was named after its code. The same classes (so `instanceof`
// works with either name), kept so code written against idempo 0.2 still compiles and runs.

/** @deprecated Renamed {@link IdempotencyStoreUnavailableError}, after its code; the same class. */
export const IdempotencyStoreError = IdempotencyStoreUnavailableError;
/** @deprecated Renamed {@link IdempotencyStoreUnavailableError}, after its code; the same class. */
export type IdempotencyStoreError = IdempotencyStoreUnavailableError;
/** @deprecated Renamed {@link IdempotencyHandlerFailedError}, after its code; the same class. */
export const IdempotencyHandlerError = IdempotencyHandlerFailedError;
/** @deprecated Renamed {@link IdempotencyHandlerFailedError}, after its code; the same class. */
export type IdempotencyHandlerError = IdempotencyHandlerFailedError;
/** @deprecated Renamed {@link IdempotencyUpstreamUnreachableError}, after its code; the same class. */
export const IdempotencyUpstreamError = IdempotencyUpstreamUnreachableError;
/** @deprecated Renamed {@link IdempotencyUpstreamUnreachableError}, after its code; the same class. */
export type IdempotencyUpstreamError = IdempotencyUpstreamUnreachableError;
/** @deprecated Renamed {@link IdempotencyConfigInvalidError}, after its code; the same class. */
export const IdempotencyConfigError = IdempotencyConfigInvalidError;
/** @deprecated Renamed {@link IdempotencyConfigInvalidError}, after its code; the same class. */
export type IdempotencyConfigError = IdempotencyConfigInvalidError;
/** @deprecated Renamed {@link IdempotencyDependencyMissingError}, after its code; the same class. */
export const IdempotencyDependencyError = IdempotencyDependencyMissingError;
/** @deprecated Renamed {@link IdempotencyDependencyMissingError}, after its code; the same class. */
export type IdempotencyDependencyError = IdempotencyDependencyMissingError;
