/**
 * `createIdempotentFetch`: a `fetch` that retries POST and PATCH without the risk of running them
 * twice, because every attempt of one call carries the same `Idempotency-Key`.
 *
 * One call, as a loop:
 *
 * ```
 * prepare (read body once, pick the key) ─▶ attempt ─▶ response, status not retryable ─▶ return it
 *                                             ▲   │
 *                                             │   └─▶ network error or retryable status
 *                                             │         ─▶ onFailedAttempt
 *                                             │         ─▶ out of retries / time / shouldRetry false?
 *                                             │              yes: return the response, or throw
 *                                             │                   IdempotencyRetriesExhaustedError
 *                                             └─ sleep ◀─ onRetry ◀─ wait = Retry-After (capped) or backoff
 * ```
 *
 * An abort (the request's signal or the `signal` option) ends the loop wherever it is.
 *
 * @module
 */

import { signRequest } from '../signatures/index.js';
import { IdempotencyRetriesExhaustedError } from '../vocabulary/index.js';
import { backoffDelay } from './backoff.js';
import {
  type FailedAttemptContext,
  type IdempotentFetch,
  type IdempotentFetchOptions,
  type ResolvedOptions,
  resolveOptions,
} from './options.js';
import { type PreparedRequest, prepareRequest } from './request.js';
import { parseRetryAfter } from './retry-after.js';
import { anySignal, sleep } from './signal.js';

type Outcome =
  | { readonly response: Response; readonly error?: undefined }
  | { readonly response?: undefined; readonly error: unknown };

/** Lets a response we will not return go, so its connection can be reused. */
function discard(response: Response | undefined): void {
  if (response?.body && !response.bodyUsed) response.body.cancel().catch(() => {});
}

/** One attempt. Resolves with the response or the error; rejects only when the call is aborted. */
async function attempt(
  options: ResolvedOptions,
  request: PreparedRequest,
  callSignal: AbortSignal | undefined,
): Promise<Outcome> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timeoutSignal: AbortSignal | undefined;
  if (options.timeout !== undefined) {
    // Not AbortSignal.timeout: that would also abort the body stream once it fires after the
    // headers arrived. This timer is cleared as soon as fetch settles.
    const controller = new AbortController();
    const ms = options.timeout;
    timer = setTimeout(
      () => controller.abort(new DOMException(`idempo client: attempt timed out after ${ms} ms`, 'TimeoutError')),
      ms,
    );
    timeoutSignal = controller.signal;
  }
  if (options.signing !== undefined) {
    // Each attempt is signed anew: its created time is now, so a retry after a long wait is
    // still within the server's maxAge.
    const { key, components, expiresIn } = options.signing;
    await signRequest(request, key, expiresIn === undefined ? { components } : { components, expiresIn });
  }
  const init: Record<string, unknown> = {
    ...request.rest,
    method: request.method,
    headers: request.headers,
  };
  if (request.body !== undefined) init.body = request.body;
  const signal = anySignal([callSignal, timeoutSignal]);
  if (signal !== undefined) init.signal = signal;
  const fetchImpl = options.fetch ?? globalThis.fetch;
  try {
    // Called on globalThis: a browser's fetch throws "Illegal invocation" on any other receiver.
    const response: Response = await fetchImpl.call(globalThis, request.url, init);
    return { response };
  } catch (error) {
    if (callSignal?.aborted) throw callSignal.reason;
    return { error };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Creates a `fetch`-compatible function that makes retries safe.
 *
 * - POST and PATCH (`keyMethods`) without an `Idempotency-Key` get one, generated once per call and
 *   sent unchanged on every attempt; a key the caller set is kept.
 * - Network errors and statuses in `retry.statusCodes` (408, 409, 425, 429, 500, 502, 503, 504) are
 *   retried with exponential backoff and full jitter, or after the server's `Retry-After` (seconds
 *   or HTTP date, capped at `retry.maxRetryAfter`). 400, 422 and every other status are returned
 *   at once.
 * - The body is read once (streams included) and sent again on every attempt.
 * - It stops at `retry.limit`, `retry.maxRetryTime`, or an abort of the request's own `signal` or
 *   the `signal` option. A call that ends on a retryable status returns that last response; one
 *   that ends on network errors rejects with {@link IdempotencyRetriesExhaustedError}; an abort
 *   rejects with the signal's reason.
 *
 * @example
 * ```ts
 * import { createIdempotentFetch } from 'idempo/client';
 *
 * const idempotentFetch = createIdempotentFetch({ retry: { limit: 4 } });
 * const response = await idempotentFetch('https://api.example.com/payments', {
 *   method: 'POST',
 *   headers: { 'content-type': 'application/json' },
 *   body: JSON.stringify({ amount: 1250, currency: 'EUR' }),
 * });
 * ```
 */
export function createIdempotentFetch(options: IdempotentFetchOptions = {}): IdempotentFetch {
  const resolved = resolveOptions(options);

  return async function idempotentFetch(input: string | URL | Request, init?: RequestInit): Promise<Response> {
    const request = await prepareRequest(input, init);
    const callSignal = anySignal([resolved.signal, request.signal]);
    if (callSignal?.aborted) throw callSignal.reason;

    const method = request.method.toUpperCase();
    let idempotencyKey = request.headers.get(resolved.keyHeader) ?? undefined;
    if (idempotencyKey === undefined && resolved.keyMethods.has(method)) {
      idempotencyKey = resolved.generateKey();
      request.headers.set(resolved.keyHeader, idempotencyKey);
    }
    const retryable = resolved.methods.has(method);
    const started = Date.now();

    for (let attemptNumber = 1; ; attemptNumber++) {
      const { response, error } = await attempt(resolved, request, callSignal);
      if (response !== undefined && !resolved.statusCodes.has(response.status)) return response;
      if (!retryable) {
        if (response !== undefined) return response;
        throw error;
      }

      const context: FailedAttemptContext = {
        attemptNumber,
        retriesLeft: Math.max(0, resolved.limit - attemptNumber + 1),
        elapsed: Date.now() - started,
        method: request.method,
        url: request.url,
        idempotencyKey,
        response,
        error,
      };
      let delay = 0;
      let stop: boolean;
      try {
        await resolved.onFailedAttempt?.(context);
        stop = context.retriesLeft === 0;
        if (!stop) {
          const retryAfter = parseRetryAfter(response?.headers.get('retry-after'));
          delay =
            retryAfter === undefined
              ? backoffDelay(attemptNumber, resolved)
              : Math.min(retryAfter, resolved.maxRetryAfter);
          stop = Date.now() - started + delay > resolved.maxRetryTime;
        }
        if (!stop && resolved.shouldRetry !== undefined) stop = !(await resolved.shouldRetry(context));
        if (!stop) await resolved.onRetry?.({ ...context, retryCount: attemptNumber, delay });
      } catch (hookError) {
        discard(response);
        throw hookError;
      }

      if (stop) {
        if (response !== undefined) return response;
        throw new IdempotencyRetriesExhaustedError(
          `idempo client: ${request.method} ${request.url} failed after ${attemptNumber} attempt(s)`,
          { cause: error, attempts: attemptNumber, idempotencyKey },
        );
      }
      discard(response);
      await sleep(delay, callSignal);
    }
  };
}
