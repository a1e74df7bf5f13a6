/**
 * idempo: idempotency keys for HTTP APIs. The core engine; stores and adapters live at their own
 * subpaths (`idempo/memory`, `idempo/sqlite`, `idempo/redis`, `idempo/postgres`, `idempo/node`, …)
 * so importing this loads none of their libraries.
 *
 * @module
 */
export { parseDuration } from './engine/duration.js';
export { createIdempotency } from './engine/engine.js';
export type { IdempotencyErrorOptions } from './engine/errors.js';
export {
  IdempotencyBodyTooLargeError,
  IdempotencyConfigError,
  IdempotencyConflictError,
  IdempotencyDependencyError,
  IdempotencyError,
  IdempotencyHandlerError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyMissingError,
  IdempotencyLeaseLostError,
  IdempotencyMismatchError,
  IdempotencyResponseNotKeptError,
  IdempotencyResultNotStoredError,
  IdempotencyStoreError,
  IdempotencyUpstreamError,
  IdempotencyUpstreamFailedError,
  IdempotencyUpstreamTimeoutError,
  PROBLEM_BASE,
} from './engine/errors.js';
export { canonicalJson, defaultFingerprint } from './engine/fingerprint.js';
export { parseIdempotencyKey } from './engine/key.js';
export { problemFormatter, stripeFormatter } from './engine/problem.js';
export type {
  CapturedResponse,
  Decision,
  Duration,
  ErrorFormatter,
  Execution,
  Idempotency,
  IdempotencyContext,
  IdempotencyEvent,
  IdempotencyEventType,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyResponse,
  ParsedBody,
} from './engine/types.js';
export type {
  ClaimInput,
  ClaimResult,
  FencedResult,
  IdempotencyStore,
  StoredResponse,
  SyncStoreOperations,
} from './stores/contract.js';
