/**
 * idempo: idempotency keys for HTTP APIs. The core engine; stores and adapters live at their own
 * subpaths (`idempo/memory`, `idempo/sqlite`, `idempo/redis`, `idempo/postgres`, `idempo/node`, …)
 * so importing this loads none of their libraries.
 *
 * @module
 */
export { IDEMPOTENCY_DEFAULTS, LIMIT_DEFAULTS, SIGNATURE_DEFAULTS } from './engine/defaults.js';
export { createIdempotency } from './engine/engine.js';
export { canonicalJson, defaultFingerprint } from './engine/fingerprint.js';
export { parseIdempotencyKey } from './engine/key.js';
export { problemFormatter, stripeFormatter } from './engine/problem.js';
export type {
  CapturedResponse,
  Decision,
  ErrorFormatter,
  Execution,
  Idempotency,
  IdempotencyContext,
  IdempotencyEvent,
  IdempotencyEventType,
  IdempotencyObserver,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyResponse,
  LimitOptions,
  ParsedBody,
  SignatureOptions,
} from './engine/types.js';
// HTTP Message Signatures: keys for the `signatures` option, and the signer the client uses.
export {
  type KeyMaterial,
  type NamedSignatureKey,
  parseKeySet,
  type SignatureAlgorithm,
  type SignatureKey,
  type SignatureKeyLookup,
  type SignRequestOptions,
  signRequest,
} from './signatures/index.js';
// The vocabulary every part shares: the engine's coded errors, durations, the store contract.
export type {
  ClaimInput,
  ClaimResult,
  DeleteResult,
  Duration,
  FencedResult,
  IdempotencyErrorOptions,
  IdempotencyStore,
  RecordInfo,
  RecordPage,
  RecordQuery,
  RecordState,
  StoredResponse,
  SyncStoreOperations,
  TransactionStep,
  TransactionWork,
} from './vocabulary/index.js';
export {
  IdempotencyBodyTooLargeError,
  IdempotencyConfigError,
  IdempotencyConfigInvalidError,
  IdempotencyConflictError,
  IdempotencyDependencyError,
  IdempotencyDependencyMissingError,
  IdempotencyError,
  IdempotencyHandlerError,
  IdempotencyHandlerFailedError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyMissingError,
  IdempotencyLeaseLostError,
  IdempotencyMismatchError,
  IdempotencyRateLimitedError,
  IdempotencyResponseNotKeptError,
  IdempotencyResultNotStoredError,
  IdempotencySignatureExpiredError,
  IdempotencySignatureInvalidError,
  IdempotencySignatureMissingError,
  IdempotencyStoreError,
  IdempotencyStoreUnavailableError,
  IdempotencyTransactionUnsupportedError,
  IdempotencyUpstreamError,
  IdempotencyUpstreamFailedError,
  IdempotencyUpstreamTimeoutError,
  IdempotencyUpstreamUnreachableError,
  PROBLEM_BASE,
  parseDuration,
} from './vocabulary/index.js';
