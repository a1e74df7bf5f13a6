import type { SignatureKeyLookup, VerifyPolicy } from '../signatures/index.js';
import {
  type Duration,
  IdempotencyConfigInvalidError,
  type IdempotencyStore,
  parseDuration,
  type SyncStoreOperations,
} from '../vocabulary/index.js';
import { IDEMPOTENCY_DEFAULTS, LIMIT_DEFAULTS, SIGNATURE_DEFAULTS } from './defaults.js';
import { defaultFingerprint } from './fingerprint.js';
import { storedHeaderFilter } from './headers.js';
import { ScopeLimiter } from './limits.js';
import { problemFormatter, stripeFormatter } from './problem.js';
import type {
  ErrorFormatter,
  IdempotencyEvent,
  IdempotencyObserver,
  IdempotencyOptions,
  IdempotencyRequest,
  LimitOptions,
  SignatureOptions,
} from './types.js';

/** {@link IdempotencyOptions} with every default applied and every value checked. */
export interface ResolvedOptions {
  store: IdempotencyStore;
  /** The store's synchronous claim and complete, when it offers them for itself (not for a wrapper of it). */
  syncStore: SyncStoreOperations | undefined;
  methods: ReadonlySet<string>;
  required: (request: IdempotencyRequest) => boolean;
  header: string;
  maxKeyLength: number;
  leaseMs: number;
  ttlMs: number;
  concurrent: 'reject' | 'wait';
  waitTimeoutMs: number;
  releases: (status: number) => boolean;
  onStoreError: 'fail-closed' | 'fail-open';
  mismatchStatus: 400 | 422;
  maxBodyBytes: number;
  maxResponseBytes: number;
  completeTimeoutMs: number;
  storesHeader: (name: string) => boolean;
  fingerprint: NonNullable<IdempotencyOptions['fingerprint']>;
  scope: IdempotencyOptions['scope'];
  formatError: ErrorFormatter;
  /** `onEvent` and every observer's, in one call; undefined when nothing listens. */
  onEvent: ((event: IdempotencyEvent, request: IdempotencyRequest) => void) | undefined;
  /** How keyed requests' signatures are verified; `undefined` when they are not. */
  signatures: (VerifyPolicy & { readonly scheme: 'http' | 'https' }) | undefined;
  /** Per-scope limits, in this process; `undefined` when there are none. */
  limiter: ScopeLimiter | undefined;
  /** The observers' `begin` wrappers, innermost first. */
  wrapBegin: NonNullable<IdempotencyObserver['wrapBegin']>[];
}

const STORE_METHODS = ['claim', 'complete', 'release', 'renew', 'saveStep'] as const;

/** Applies defaults and validates options once, at setup, so no request meets a bad option. */
export function resolveOptions(options: IdempotencyOptions): ResolvedOptions {
  if (!options || typeof options !== 'object')
    throw new IdempotencyConfigInvalidError('createIdempotency needs an options object with a store.');
  const { store } = options;
  for (const method of STORE_METHODS) {
    if (typeof store?.[method] !== 'function') {
      throw new IdempotencyConfigInvalidError(
        `options.store must implement the IdempotencyStore contract (missing ${method}()); use createMemoryStore(), createSqliteStore(), createRedisStore() or createPostgresStore().`,
      );
    }
  }
  const observers = options.observe === undefined ? [] : [options.observe].flat();
  let observed: IdempotencyStore = store;
  for (const observer of observers) if (observer.wrapStore) observed = observer.wrapStore(observed);
  const leaseMs = parseDuration(options.lease ?? IDEMPOTENCY_DEFAULTS.lease, 'lease');
  const ttlMs = parseDuration(options.ttl ?? IDEMPOTENCY_DEFAULTS.ttl, 'ttl');
  if (ttlMs < leaseMs)
    throw new IdempotencyConfigInvalidError(`ttl (${ttlMs} ms) must not be shorter than lease (${leaseMs} ms).`);
  return {
    store: observed,
    // A wrapper made by spreading, Object.create or a Proxy may replace claim or complete:
    // the synchronous versions of the store underneath would bypass it.
    syncStore: observed.sync?.store === observed ? observed.sync : undefined,
    methods: new Set((options.methods ?? IDEMPOTENCY_DEFAULTS.methods).map((m) => m.toUpperCase())),
    required: requiredPredicate(options.required),
    header: (options.header ?? IDEMPOTENCY_DEFAULTS.header).toLowerCase(),
    maxKeyLength: positiveInteger(options.maxKeyLength ?? IDEMPOTENCY_DEFAULTS.maxKeyLength, 'maxKeyLength'),
    leaseMs,
    ttlMs,
    concurrent: oneOf(options.concurrent ?? IDEMPOTENCY_DEFAULTS.concurrent, ['reject', 'wait'], 'concurrent'),
    waitTimeoutMs: parseDuration(options.waitTimeout ?? IDEMPOTENCY_DEFAULTS.waitTimeout, 'waitTimeout'),
    releases: releasePredicate(options.releaseOn ?? IDEMPOTENCY_DEFAULTS.releaseOn),
    onStoreError: oneOf(
      options.onStoreError ?? IDEMPOTENCY_DEFAULTS.onStoreError,
      ['fail-closed', 'fail-open'],
      'onStoreError',
    ),
    mismatchStatus: oneOf(options.mismatchStatus ?? IDEMPOTENCY_DEFAULTS.mismatchStatus, [400, 422], 'mismatchStatus'),
    maxBodyBytes: positiveInteger(options.maxBodyBytes ?? IDEMPOTENCY_DEFAULTS.maxBodyBytes, 'maxBodyBytes'),
    maxResponseBytes: positiveInteger(
      options.maxResponseBytes ?? IDEMPOTENCY_DEFAULTS.maxResponseBytes,
      'maxResponseBytes',
    ),
    completeTimeoutMs: parseDuration(
      options.completeTimeout ?? IDEMPOTENCY_DEFAULTS.completeTimeout,
      'completeTimeout',
    ),
    storesHeader: storedHeaderFilter(options.replayHeaders?.exclude ?? IDEMPOTENCY_DEFAULTS.replayHeaders.exclude),
    fingerprint: options.fingerprint ? wellFormed(options.fingerprint) : defaultFingerprint,
    scope: options.scope,
    formatError: formatterFor(options.errorFormat ?? IDEMPOTENCY_DEFAULTS.errorFormat),
    onEvent: eventListener(options.onEvent, observers),
    signatures: options.signatures === undefined ? undefined : signaturePolicy(options.signatures, options.header),
    limiter: options.limits === undefined ? undefined : scopeLimiter(options.limits),
    wrapBegin: observers.flatMap((observer) => (observer.wrapBegin ? [observer.wrapBegin.bind(observer)] : [])),
  };
}

function signaturePolicy(
  options: SignatureOptions,
  header: string | undefined,
): VerifyPolicy & { readonly scheme: 'http' | 'https' } {
  if (!options || typeof options !== 'object')
    throw new IdempotencyConfigInvalidError(
      'signatures: expected an object with keys, e.g. { keys: parseKeySet(text) }.',
    );
  return {
    lookup: keyLookup(options.keys),
    required: options.required ?? SIGNATURE_DEFAULTS.required,
    maxAgeSeconds: parseDuration(options.maxAge ?? SIGNATURE_DEFAULTS.maxAge, 'signatures.maxAge') / 1_000,
    clockSkewSeconds: parseDuration(options.clockSkew ?? SIGNATURE_DEFAULTS.clockSkew, 'signatures.clockSkew') / 1_000,
    keyHeader: (header ?? IDEMPOTENCY_DEFAULTS.header).toLowerCase(),
    scheme: oneOf(options.scheme ?? SIGNATURE_DEFAULTS.scheme, ['http', 'https'], 'signatures.scheme'),
  };
}

function scopeLimiter(options: LimitOptions): ScopeLimiter {
  if (!options || typeof options !== 'object' || (options.inFlight === undefined && options.newKeys === undefined))
    throw new IdempotencyConfigInvalidError(
      "limits: expected inFlight, newKeys or both, e.g. { inFlight: 20, newKeys: { max: 600, window: '1m' } }.",
    );
  const { newKeys } = options;
  if (newKeys !== undefined && (!newKeys || typeof newKeys !== 'object'))
    throw new IdempotencyConfigInvalidError(
      "limits.newKeys: expected { max, window }, e.g. { max: 600, window: '1m' }.",
    );
  return new ScopeLimiter({
    inFlight: options.inFlight === undefined ? undefined : positiveInteger(options.inFlight, 'limits.inFlight'),
    newKeys:
      newKeys === undefined
        ? undefined
        : {
            max: positiveInteger(newKeys.max, 'limits.newKeys.max'),
            windowMs: positiveDuration(newKeys.window, 'limits.newKeys.window'),
          },
    maxScopes: positiveInteger(options.maxScopes ?? LIMIT_DEFAULTS.maxScopes, 'limits.maxScopes'),
  });
}

function positiveDuration(value: Duration, option: string): number {
  const ms = parseDuration(value, option);
  if (ms <= 0) throw new IdempotencyConfigInvalidError(`${option}: expected a duration above zero, got ${value}`);
  return ms;
}

function keyLookup(keys: SignatureOptions['keys']): SignatureKeyLookup {
  if (typeof keys === 'function') return keys;
  if (!Array.isArray(keys) || keys.length === 0)
    throw new IdempotencyConfigInvalidError(
      'signatures.keys: expected a non-empty list of { keyid, alg, key } or a function that looks a key up by keyid.',
    );
  const byId = new Map<string, (typeof keys)[number]>();
  for (const key of keys) {
    if (typeof key?.keyid !== 'string' || key.keyid === '')
      throw new IdempotencyConfigInvalidError('signatures.keys: every key needs a keyid.');
    if (key.alg !== 'hmac-sha256' && key.alg !== 'ed25519')
      throw new IdempotencyConfigInvalidError(
        `signatures.keys: key ${JSON.stringify(key.keyid)} has alg ${JSON.stringify(key.alg)}; expected 'hmac-sha256' or 'ed25519'.`,
      );
    if (byId.has(key.keyid))
      throw new IdempotencyConfigInvalidError(`signatures.keys: keyid ${JSON.stringify(key.keyid)} is listed twice.`);
    byId.set(key.keyid, key);
  }
  return (keyid) => byId.get(keyid);
}

/** `onEvent` then each observer's, each failure ignored alone; undefined when nothing listens, so requests skip the clock. */
function eventListener(
  onEvent: IdempotencyOptions['onEvent'],
  observers: readonly IdempotencyObserver[],
): ResolvedOptions['onEvent'] {
  const listeners = observers.flatMap((observer) => (observer.onEvent ? [observer.onEvent.bind(observer)] : []));
  if (listeners.length === 0) return onEvent && ((event) => onEvent(event));
  return (event, request) => {
    if (onEvent) {
      try {
        onEvent(event);
      } catch {}
    }
    for (const listener of listeners) {
      try {
        listener(event, request);
      } catch {}
    }
  };
}

function requiredPredicate(required: IdempotencyOptions['required']): (request: IdempotencyRequest) => boolean {
  if (typeof required === 'function') return required;
  const value = required ?? IDEMPOTENCY_DEFAULTS.required;
  return () => value;
}

function releasePredicate(releaseOn: NonNullable<IdempotencyOptions['releaseOn']>): (status: number) => boolean {
  const exact = new Set<number>();
  const classes = new Set<number>();
  for (const entry of releaseOn) {
    if (typeof entry === 'number' && Number.isInteger(entry) && entry >= 100 && entry <= 599) exact.add(entry);
    else if (typeof entry === 'string' && /^[1-5]xx$/.test(entry)) classes.add(Number(entry[0]));
    else
      throw new IdempotencyConfigInvalidError(
        `releaseOn: expected status codes or classes like '5xx', got ${JSON.stringify(entry)}`,
      );
  }
  return (status) => exact.has(status) || classes.has(Math.floor(status / 100));
}

function formatterFor(format: NonNullable<IdempotencyOptions['errorFormat']>): ErrorFormatter {
  if (typeof format === 'function') return format;
  if (format === 'problem') return problemFormatter;
  if (format === 'stripe') return stripeFormatter;
  throw new IdempotencyConfigInvalidError(
    `errorFormat: expected 'problem', 'stripe' or a function, got ${JSON.stringify(format)}`,
  );
}

function positiveInteger(value: number, option: string): number {
  if (!Number.isSafeInteger(value) || value <= 0)
    throw new IdempotencyConfigInvalidError(`${option}: expected a positive integer, got ${value}`);
  return value;
}

function oneOf<T>(value: T, allowed: readonly T[], option: string): T {
  if (!allowed.includes(value)) {
    throw new IdempotencyConfigInvalidError(
      `${option}: expected one of ${allowed.map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

type Fingerprint = NonNullable<IdempotencyOptions['fingerprint']>;

/**
 * A custom fingerprint as every store compares it: lone surrogates become U+FFFD, which is what
 * a store keeping text as UTF-8 (SQLite, PostgreSQL, Redis) reads back, so the same request
 * matches its own record on every store. The default fingerprint is base64url and needs none.
 */
function wellFormed(fingerprint: Fingerprint): Fingerprint {
  return (request, body) => {
    const computed = fingerprint(request, body);
    return typeof computed === 'string' ? toWellFormed(computed) : computed.then(toWellFormed);
  };
}

/** `String.prototype.toWellFormed` (ES2024, in Node 20), typed for the ES2023 lib. */
function toWellFormed(text: string): string {
  const checked = text as string & { isWellFormed(): boolean; toWellFormed(): string };
  return checked.isWellFormed() ? text : checked.toWellFormed();
}
