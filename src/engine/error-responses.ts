/**
 * idempo's own error responses, in one place: which error a failure is answered with, the
 * messages for failures that are not idempo's errors, the `413` the body readers throw, and the
 * response that carries an error (formatted by `errorFormat`, with `Retry-After` when a retry
 * should wait). The formatters themselves are in `problem.ts`.
 *
 * @module
 */
import {
  IdempotencyBodyTooLargeError,
  IdempotencyError,
  IdempotencyHandlerFailedError,
  retryAfterSeconds,
} from '../vocabulary/index.js';
import type { ResolvedOptions } from './options.js';
import type { IdempotencyRequest, IdempotencyResponse } from './types.js';

/** What a client is told when the handler fails, unless the failure says otherwise. */
export const HANDLER_FAILED_MESSAGE = 'The request failed before it completed; it may be retried with the same key.';

/** What a client is told when idempo itself failed before the handler ran. */
export const IDEMPO_FAILED_MESSAGE = 'idempo could not process the request; it may be retried with the same key.';

/**
 * Why an adapter released a key whose client hung up while it was being claimed: nothing ran. The
 * `released` event carries it; no client sees it.
 */
export const CLIENT_GONE = new Error('The client closed the connection before the handler started; nothing ran.');

/**
 * The error a failed request is answered with: an IdempotencyError (a step refused after a lost
 * lease, the gateway's upstream errors) keeps its own status; anything else becomes a retryable
 * IdempotencyHandlerFailedError with `message`.
 */
export function failureOf(error: unknown, message: string = HANDLER_FAILED_MESSAGE): IdempotencyError {
  return error instanceof IdempotencyError ? error : new IdempotencyHandlerFailedError(message, { cause: error });
}

/** The 413 error for a body past `maxBytes`; adapters throw it from their body readers. */
export function tooLarge(maxBytes: number): IdempotencyBodyTooLargeError {
  return new IdempotencyBodyTooLargeError(
    `The request body exceeds ${maxBytes} bytes, the most idempo reads to fingerprint a keyed request.`,
  );
}

/**
 * idempo's error response for `error`, with `Retry-After` when a retry should wait (`retryAfterMs`,
 * or else the error's own). Every error idempo answers goes through here.
 */
export function errorResponse(
  config: Pick<ResolvedOptions, 'formatError'>,
  error: IdempotencyError,
  request: IdempotencyRequest,
  retryAfterMs: number | undefined = error.retryAfterMs,
): IdempotencyResponse {
  const response = config.formatError(error, request);
  if (retryAfterMs !== undefined) response.headers.push(['retry-after', retryAfterSeconds(retryAfterMs)]);
  return response;
}
