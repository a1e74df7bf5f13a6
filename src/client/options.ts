/**
 * Options of {@link createIdempotentFetch}, their defaults, and the contexts its hooks receive.
 * The `retry` object follows ky's shape; `signal`, `onFailedAttempt` and `maxRetryTime` follow
 * p-retry's.
 *
 * @module
 */

import { DEFAULT_SIGNED_COMPONENTS, type NamedSignatureKey } from '../signatures/index.js';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/**
 * The `fetch` the client calls for each attempt: the global one, undici's, or any function with
 * the same call shape. It always receives a URL string and a plain init object whose `body` is a
 * `Uint8Array` (or absent), so it never has to accept another realm's `Request`.
 *
 * @example
 * ```ts
 * import { fetch as undiciFetch } from 'undici';
 * const idempotentFetch = createIdempotentFetch({ fetch: undiciFetch });
 * ```
 */
// biome-ignore lint/suspicious/noExplicitAny: undici's fetch declares its own RequestInit and Response types; any keeps it assignable.
export type FetchLike = (input: string, init: any) => Promise<any>;

/**
 * A `fetch`-compatible function that retries safely: what {@link createIdempotentFetch} returns.
 *
 * @example
 * ```ts
 * const idempotentFetch: IdempotentFetch = createIdempotentFetch();
 * const response = await idempotentFetch('https://api.example.com/payments', { method: 'POST', body: '{}' });
 * ```
 */
export type IdempotentFetch = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

/**
 * What the client knows about an attempt that failed: a thrown network error or a response whose
 * status is in `retry.statusCodes`.
 *
 * @example
 * ```ts
 * createIdempotentFetch({
 *   onFailedAttempt: ({ attemptNumber, retriesLeft, response, error }) =>
 *     log.warn({ attemptNumber, retriesLeft, status: response?.status, error }),
 * });
 * ```
 */
export interface FailedAttemptContext {
  /** 1 for the first attempt, 2 for the first retry, and so on. */
  readonly attemptNumber: number;
  /** How many retries `retry.limit` still allows after this attempt (0 on the last one). */
  readonly retriesLeft: number;
  /** Milliseconds since the first attempt started. */
  readonly elapsed: number;
  /** Request method, as sent. */
  readonly method: string;
  /** Request URL. */
  readonly url: string;
  /** The `Idempotency-Key` sent with every attempt of this call, or `undefined` when none is sent. */
  readonly idempotencyKey: string | undefined;
  /**
   * The response when the attempt got one with a retryable status, body unread. Read a
   * `response.clone()`: after the last attempt this very response is what the call returns.
   */
  readonly response: Response | undefined;
  /** The error when the attempt threw (network error, per-attempt timeout). */
  readonly error: unknown;
}

/**
 * What the client knows just before it waits and retries.
 *
 * @example
 * ```ts
 * createIdempotentFetch({
 *   onRetry: ({ retryCount, delay, idempotencyKey }) => log.info({ retryCount, delay, idempotencyKey }, 'retrying'),
 * });
 * ```
 */
export interface RetryContext extends FailedAttemptContext {
  /** 1 for the first retry, 2 for the second, and so on. */
  readonly retryCount: number;
  /** Milliseconds the client waits before the retry: from `Retry-After` when the response had one, else the backoff. */
  readonly delay: number;
}

/**
 * When and how often to retry. Shaped like ky's `retry` option, plus p-retry's `maxRetryTime`.
 *
 * @example
 * ```ts
 * createIdempotentFetch({
 *   retry: { limit: 5, backoffLimit: 5_000, maxRetryTime: 30_000, statusCodes: [429, 503] },
 * });
 * ```
 */
export interface RetryOptions {
  /**
   * Most retries per call (attempts are `limit + 1`). `0` turns retrying off.
   * @default 3
   */
  limit?: number;
  /**
   * Methods that are retried. POST and PATCH are safe to retry only because the client sends the
   * same `Idempotency-Key` on every attempt; keep them in `keyMethods` if you keep them here.
   * @default ['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'POST', 'PATCH']
   */
  methods?: readonly string[];
  /**
   * Response statuses that are retried. Other statuses, including 400 and 422, are returned at once.
   * @default [408, 409, 425, 429, 500, 502, 503, 504]
   */
  statusCodes?: readonly number[];
  /**
   * Backoff before retry number `retryCount` (1-based), in milliseconds, before jitter and `backoffLimit`.
   * @default (retryCount) => 300 * 2 ** (retryCount - 1)
   */
  delay?: (retryCount: number) => number;
  /**
   * Upper bound of the computed backoff, in milliseconds. Does not apply to `Retry-After`.
   * @default 10_000
   */
  backoffLimit?: number;
  /**
   * `true` waits a uniformly random time between 0 and the backoff ("full jitter"), so clients that
   * failed together do not retry together. `false` waits the backoff exactly; a function maps it.
   * @default true
   */
  jitter?: boolean | ((delay: number) => number);
  /**
   * Upper bound of a wait taken from a `Retry-After` header (seconds or HTTP date), in
   * milliseconds; a longer `Retry-After` is cut to this.
   * @default 30_000
   */
  maxRetryAfter?: number;
  /**
   * Time budget of one call, in milliseconds from the start of its first attempt: no retry starts
   * after it. When the next wait would cross it, the client stops at once.
   * @default Infinity
   */
  maxRetryTime?: number;
  /**
   * Last say on a failure that would otherwise be retried; return `false` to stop.
   * @default undefined (retry whatever `methods` and `statusCodes` allow)
   */
  shouldRetry?: (context: FailedAttemptContext) => boolean | Promise<boolean>;
}

/**
 * Options of {@link createIdempotentFetch}.
 *
 * @example
 * ```ts
 * const idempotentFetch = createIdempotentFetch({
 *   retry: { limit: 4 },
 *   timeout: 10_000,
 *   onRetry: ({ retryCount, delay }) => console.warn(`retry ${retryCount} in ${delay} ms`),
 * });
 * ```
 */
export interface IdempotentFetchOptions {
  /**
   * The `fetch` each attempt calls (for instance undici's, or one with a custom dispatcher).
   * @default globalThis.fetch, looked up on each call
   */
  fetch?: FetchLike;
  /**
   * Retry policy, or a number as shorthand for `{ limit }`.
   * @default {} (every {@link RetryOptions} default)
   */
  retry?: RetryOptions | number;
  /**
   * Methods that get a generated `Idempotency-Key` when the caller sent none. A key the caller
   * set is always kept.
   * @default ['POST', 'PATCH']
   */
  keyMethods?: readonly string[];
  /**
   * Header the key travels in.
   * @default 'Idempotency-Key'
   */
  keyHeader?: string;
  /**
   * Makes the key of one logical call; called once per call, never per attempt.
   * @default () => globalThis.crypto.randomUUID()
   */
  generateKey?: () => string;
  /**
   * Time limit of each attempt until response headers arrive, in milliseconds; an attempt that
   * takes longer is aborted and counts as a network error (and is retried). The response body is
   * not covered.
   * @default undefined (no limit)
   */
  timeout?: number;
  /**
   * Aborts every call made through this function, in addition to each request's own `signal`.
   * An abort stops the call at once, mid-attempt or mid-wait, and rejects with the signal's reason.
   * @default undefined
   */
  signal?: AbortSignal;
  /**
   * Called after every failed attempt, the last one included. If it throws, the call stops and
   * rejects with that error.
   * @default undefined
   */
  onFailedAttempt?: (context: FailedAttemptContext) => void | Promise<void>;
  /**
   * Called before each retry, after the wait is known and before it starts.
   * @default undefined
   */
  onRetry?: (context: RetryContext) => void | Promise<void>;
  /**
   * Sign every attempt with HTTP Message Signatures (RFC 9421): a fresh `created` time each
   * attempt, a `Content-Digest` (RFC 9530) of the body, and a signature over the method,
   * `@authority`, `@path`, `@query`, the key header, the digest and `Content-Type`. WebCrypto
   * only, so it works in browsers. For servers with the `signatures` option on.
   * @default undefined (requests are not signed)
   */
  signing?: SigningOptions;
}

/**
 * Options of {@link IdempotentFetchOptions.signing}.
 *
 * @example
 * ```ts
 * const idempotentFetch = createIdempotentFetch({
 *   signing: { key: { keyid: 'client-1', alg: 'ed25519', key: privateJwk } },
 * });
 * ```
 */
export interface SigningOptions {
  /** The key to sign with and its `keyid` (HMAC: the shared secret; Ed25519: a private JWK). */
  key: NamedSignatureKey;
  /**
   * The components covered; the key header's name replaces `idempotency-key`.
   * @default ['@method', '@authority', '@path', '@query', 'idempotency-key', 'content-digest', 'content-type']
   */
  components?: readonly string[];
  /**
   * Seconds after `created` the signature expires (an `expires` parameter).
   * @default undefined (the server's maxAge decides)
   */
  expiresIn?: number;
}

/** The defaults, in one place. */
export const CLIENT_DEFAULTS = {
  limit: 3,
  methods: ['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'TRACE', 'POST', 'PATCH'],
  statusCodes: [408, 409, 425, 429, 500, 502, 503, 504],
  backoffLimit: 10_000,
  maxRetryAfter: 30_000,
  maxRetryTime: Number.POSITIVE_INFINITY,
  keyMethods: ['POST', 'PATCH'],
  keyHeader: 'Idempotency-Key',
} as const;

/** {@link IdempotentFetchOptions} with every default filled in and sets for lookups. */
export interface ResolvedOptions {
  readonly fetch: FetchLike | undefined;
  readonly limit: number;
  readonly methods: ReadonlySet<string>;
  readonly statusCodes: ReadonlySet<number>;
  readonly delay: (retryCount: number) => number;
  readonly backoffLimit: number;
  readonly jitter: boolean | ((delay: number) => number);
  readonly maxRetryAfter: number;
  readonly maxRetryTime: number;
  readonly shouldRetry: RetryOptions['shouldRetry'];
  readonly keyMethods: ReadonlySet<string>;
  readonly keyHeader: string;
  readonly generateKey: () => string;
  readonly timeout: number | undefined;
  readonly signal: AbortSignal | undefined;
  readonly onFailedAttempt: IdempotentFetchOptions['onFailedAttempt'];
  readonly onRetry: IdempotentFetchOptions['onRetry'];
  /** The key and components each attempt is signed with, when it is. */
  readonly signing:
    | {
        readonly key: NamedSignatureKey;
        readonly components: readonly string[];
        readonly expiresIn: number | undefined;
      }
    | undefined;
}

function defaultDelay(retryCount: number): number {
  return 300 * 2 ** (retryCount - 1);
}

function defaultGenerateKey(): string {
  return globalThis.crypto.randomUUID();
}

function nonNegative(name: string, value: number): number {
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new IdempotencyConfigInvalidError(`idempo client: ${name} must be a number >= 0, got ${String(value)}`);
  }
  return value;
}

function upper(methods: readonly string[]): ReadonlySet<string> {
  return new Set(methods.map((method) => method.toUpperCase()));
}

/** Fills in defaults and checks numbers once, at creation, so a bad option fails early. */
export function resolveOptions(options: IdempotentFetchOptions): ResolvedOptions {
  const retry: RetryOptions = typeof options.retry === 'number' ? { limit: options.retry } : (options.retry ?? {});
  const limit = nonNegative('retry.limit', retry.limit ?? CLIENT_DEFAULTS.limit);
  return {
    fetch: options.fetch,
    limit: Number.isFinite(limit) ? Math.floor(limit) : limit,
    methods: upper(retry.methods ?? CLIENT_DEFAULTS.methods),
    statusCodes: new Set(retry.statusCodes ?? CLIENT_DEFAULTS.statusCodes),
    delay: retry.delay ?? defaultDelay,
    backoffLimit: nonNegative('retry.backoffLimit', retry.backoffLimit ?? CLIENT_DEFAULTS.backoffLimit),
    jitter: retry.jitter ?? true,
    maxRetryAfter: nonNegative('retry.maxRetryAfter', retry.maxRetryAfter ?? CLIENT_DEFAULTS.maxRetryAfter),
    maxRetryTime: nonNegative('retry.maxRetryTime', retry.maxRetryTime ?? CLIENT_DEFAULTS.maxRetryTime),
    shouldRetry: retry.shouldRetry,
    keyMethods: upper(options.keyMethods ?? CLIENT_DEFAULTS.keyMethods),
    keyHeader: options.keyHeader ?? CLIENT_DEFAULTS.keyHeader,
    generateKey: options.generateKey ?? defaultGenerateKey,
    timeout: options.timeout === undefined ? undefined : nonNegative('timeout', options.timeout),
    signal: options.signal,
    onFailedAttempt: options.onFailedAttempt,
    onRetry: options.onRetry,
    signing:
      options.signing === undefined
        ? undefined
        : resolveSigning(options.signing, options.keyHeader ?? CLIENT_DEFAULTS.keyHeader),
  };
}

function resolveSigning(signing: SigningOptions, keyHeader: string): ResolvedOptions['signing'] {
  const { key } = signing;
  if (typeof key?.keyid !== 'string' || (key.alg !== 'hmac-sha256' && key.alg !== 'ed25519'))
    throw new IdempotencyConfigInvalidError(
      "idempo client: signing.key must be { keyid, alg: 'hmac-sha256' | 'ed25519', key }.",
    );
  const header = keyHeader.toLowerCase();
  const components = (signing.components ?? DEFAULT_SIGNED_COMPONENTS).map((name) =>
    name === 'idempotency-key' ? header : name,
  );
  return { key, components, expiresIn: signing.expiresIn };
}
