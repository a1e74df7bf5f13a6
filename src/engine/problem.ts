import { type IdempotencyError, IdempotencyResponseNotKeptError } from '../vocabulary/index.js';
import type { ErrorFormatter, IdempotencyRequest, IdempotencyResponse } from './types.js';

const encoder = new TextEncoder();

/**
 * RFC 9457 `application/problem+json`: `type`, `title`, `status`, `detail`, plus idempo's `code`
 * (and `originalStatus` for a response that was not kept).
 *
 * @example
 * ```ts
 * const res = problemFormatter(new IdempotencyKeyInvalidError('empty'), request);
 * ```
 */
export const problemFormatter: ErrorFormatter = function problemFormatter(
  error: IdempotencyError,
  request: IdempotencyRequest,
): IdempotencyResponse {
  const body = JSON.stringify({
    type: error.type,
    title: error.title,
    status: error.status,
    detail: error.message,
    instance: request.url,
    code: error.code,
    ...(error instanceof IdempotencyResponseNotKeptError ? { originalStatus: error.originalStatus } : {}),
  });
  return { status: error.status, headers: [['content-type', 'application/problem+json']], body: encoder.encode(body) };
};

/**
 * Stripe's error shape, `{"error": {type, code, message}}`, for APIs whose clients (Stripe's SDKs
 * among them) read any JSON body without an `error` member as a success.
 *
 * @example
 * ```ts
 * createIdempotency({ store, errorFormat: 'stripe' });
 * ```
 */
export const stripeFormatter: ErrorFormatter = function stripeFormatter(error: IdempotencyError): IdempotencyResponse {
  const type =
    error.code === 'IDEMPO_MISMATCH' || error.code === 'IDEMPO_CONFLICT'
      ? 'idempotency_error'
      : error.status >= 500
        ? 'api_error'
        : 'invalid_request_error';
  const body = JSON.stringify({ error: { type, code: error.code.toLowerCase(), message: error.message } });
  return { status: error.status, headers: [['content-type', 'application/json']], body: encoder.encode(body) };
};
