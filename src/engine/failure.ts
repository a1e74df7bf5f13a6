/**
 * How the engine and the Node adapters answer a request whose handler failed.
 *
 * @module
 */
import { IdempotencyError, IdempotencyHandlerError } from '../vocabulary/index.js';

/** What a client is told when the handler fails, unless the failure says otherwise. */
export const HANDLER_FAILED_MESSAGE = 'The request failed before it completed; it may be retried with the same key.';

/**
 * The error a failed request is answered with: an IdempotencyError (a step refused after a lost
 * lease, the gateway's upstream errors) keeps its own status; anything else becomes a retryable
 * IdempotencyHandlerError with `message`.
 */
export function failureOf(error: unknown, message: string = HANDLER_FAILED_MESSAGE): IdempotencyError {
  return error instanceof IdempotencyError ? error : new IdempotencyHandlerError(message, { cause: error });
}
