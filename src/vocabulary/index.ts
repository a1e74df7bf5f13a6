/**
 * idempo's vocabulary: the words every part of idempo speaks and none of them owns — the coded
 * errors, durations, and the store contract's types. The engine answers with these errors and
 * calls stores through this contract; stores implement it and throw these errors; the client
 * throws its own coded error; adapters and the gateway pass all of it along.
 *
 * Why a folder of its own, at the bottom: when these lived in the engine and in stores/contract.ts,
 * the engine and the stores imported each other, and the browser client reached into the engine
 * for its base error class. Here they import nothing of idempo (and nothing at all but each
 * other), so every part can stand on them and none has to import sideways or upward
 * (test/architecture/imports.test.ts keeps it so; docs/architecture.md draws the layers).
 *
 * It is named for what it holds rather than `common` or `shared`: a thing belongs here only if it
 * is a word the parts use to talk to each other, not because two parts happen to need a helper.
 * Nothing here runs at import time or needs Node: the client loads it in a browser.
 *
 * @module
 */
export { type Duration, parseDuration, retryAfterSeconds } from './duration.js';
export {
  IdempotencyBodyTooLargeError,
  IdempotencyConfigError,
  IdempotencyConfigInvalidError,
  IdempotencyConflictError,
  IdempotencyDependencyError,
  IdempotencyDependencyMissingError,
  IdempotencyError,
  type IdempotencyErrorOptions,
  IdempotencyGatewayDrainingError,
  IdempotencyHandlerError,
  IdempotencyHandlerFailedError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyMissingError,
  IdempotencyLeaseLostError,
  IdempotencyMismatchError,
  IdempotencyRateLimitedError,
  IdempotencyRecordUnreadableError,
  IdempotencyResponseNotKeptError,
  IdempotencyResultNotStoredError,
  IdempotencyRetriesExhaustedError,
  type IdempotencyRetriesExhaustedErrorOptions,
  IdempotencySignatureExpiredError,
  IdempotencySignatureInvalidError,
  IdempotencySignatureMissingError,
  IdempotencyStoreError,
  IdempotencyStoreNotMigratedError,
  IdempotencyStoreUnavailableError,
  IdempotencyTransactionUnsupportedError,
  IdempotencyUpstreamError,
  IdempotencyUpstreamFailedError,
  IdempotencyUpstreamTimeoutError,
  IdempotencyUpstreamUnreachableError,
  PROBLEM_BASE,
} from './errors.js';
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
} from './store-contract.js';
