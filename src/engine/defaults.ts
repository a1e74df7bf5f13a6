import { DEFAULT_EXCLUDED_HEADERS } from './headers.js';

/**
 * The engine's defaults, in one place: `createIdempotency` applies them, and the gateway's flags
 * and the docs take theirs from here. A test checks docs/options.md's table against it.
 *
 * @example
 * ```ts
 * import { IDEMPOTENCY_DEFAULTS } from 'idempo';
 * createIdempotency({ store, lease: IDEMPOTENCY_DEFAULTS.lease, ttl: '7d' });
 * ```
 */
export const IDEMPOTENCY_DEFAULTS = {
  methods: ['POST', 'PATCH'],
  required: false,
  header: 'idempotency-key',
  maxKeyLength: 255,
  lease: '60s',
  ttl: '24h',
  concurrent: 'reject',
  waitTimeout: '10s',
  releaseOn: ['5xx'],
  onStoreError: 'fail-closed',
  mismatchStatus: 422,
  maxBodyBytes: 1_048_576,
  maxResponseBytes: 1_048_576,
  completeTimeout: '5s',
  replayHeaders: { exclude: DEFAULT_EXCLUDED_HEADERS },
  errorFormat: 'problem',
} as const;

/**
 * The defaults of the `signatures` option's own fields (`SignatureOptions`); signatures are off
 * unless `signatures` is given.
 *
 * @example
 * ```ts
 * import { SIGNATURE_DEFAULTS } from 'idempo';
 * createIdempotency({ store, signatures: { keys, maxAge: SIGNATURE_DEFAULTS.maxAge } });
 * ```
 */
export const SIGNATURE_DEFAULTS = {
  required: true,
  maxAge: '5m',
  clockSkew: '30s',
  scheme: 'https',
} as const;

/**
 * The defaults of the `limits` option's own fields (`LimitOptions`); limits are off unless
 * `limits` is given.
 *
 * @example
 * ```ts
 * import { LIMIT_DEFAULTS } from 'idempo';
 * createIdempotency({ store, limits: { inFlight: 20, maxScopes: LIMIT_DEFAULTS.maxScopes * 10 } });
 * ```
 */
export const LIMIT_DEFAULTS = {
  maxScopes: 10_000,
} as const;
