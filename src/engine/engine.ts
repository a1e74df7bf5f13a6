import { verifyRequest } from '../signatures/index.js';
import {
  type ClaimResult,
  IdempotencyBodyTooLargeError,
  IdempotencyConflictError,
  IdempotencyError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyMissingError,
  IdempotencyMismatchError,
  IdempotencyRateLimitedError,
  IdempotencySignatureInvalidError,
  IdempotencyStoreUnavailableError,
  type StoredResponse,
} from '../vocabulary/index.js';
import { errorResponse } from './error-responses.js';
import { ClaimedExecution, CONFLICT_RETRY_MS, type Emit } from './execution.js';
import { storeKeyFor } from './fingerprint.js';
import { REPLAYED_HEADER } from './headers.js';
import { parseIdempotencyKey } from './key.js';
import { LeaseRenewer } from './lease-renewer.js';
import { LimitTicket } from './limits.js';
import { type ResolvedOptions, resolveOptions } from './options.js';
import { pathOf } from './path.js';
import { claimThisTurn } from './turn-claims.js';
import type {
  Decision,
  Idempotency,
  IdempotencyEvent,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyResponse,
  ParsedBody,
} from './types.js';
import { handleWebRequest } from './web.js';

const PASS: Decision = Object.freeze({ action: 'pass' });
const STORE_RETRY_MS = 1_000;
/** With a notifying store a waiter still re-checks this often, covering a notification sent before it subscribed. */
const NOTIFIED_RECHECK_MS = 500;
const POLL_MIN_MS = 10;
const POLL_MAX_MS = 200;

/**
 * Creates an idempotency engine over a store.
 *
 * @example
 * ```ts
 * import { createIdempotency } from 'idempo';
 * import { createMemoryStore } from 'idempo/memory';
 *
 * const idem = createIdempotency({ store: createMemoryStore() });
 * const response = await idem.handle(request, async (req, ctx) => Response.json({ id: 'pay_1' }, { status: 201 }));
 * ```
 */
export function createIdempotency(options: IdempotencyOptions): Idempotency {
  const config = resolveOptions(options);
  const renewer = new LeaseRenewer(config.leaseMs);
  let run = (request: IdempotencyRequest) => begin(config, renewer, request);
  for (const wrap of config.wrapBegin) run = wrap(run);
  const engine: Idempotency = {
    begin: run,
    handle: (request, handler) => handleWebRequest(engine, request, handler),
    formatError: (error, request) => errorResponse(config, error, request),
    limits: { maxBodyBytes: config.maxBodyBytes, maxResponseBytes: config.maxResponseBytes },
  };
  return engine;
}

/*
 * One request through the protocol:
 *
 *   method not covered ─────────────────────────────▶ pass
 *   no key ──── required? ── yes ──▶ 400            └─ no ──▶ pass
 *   key malformed ──────────────────▶ 400
 *   body over maxBodyBytes ─────────▶ 413
 *   signatures on, not verified ────▶ 401 (nothing claimed)
 *   scope at a limit ───────────────▶ 429 (nothing claimed)
 *   claim ── acquired ──▶ execute (lease renewed) ──▶ commit: store | release (releaseOn, too large)
 *         │                                         └▶ abort: release
 *         ├─ replay ────▶ stored response + Idempotent-Replayed
 *         ├─ mismatch ──▶ 422 (or 400)
 *         ├─ in_flight ─▶ 409 + Retry-After, or wait for a change and claim again
 *         └─ throws ────▶ 503 (fail-closed) or pass (fail-open)
 */
async function begin(config: ResolvedOptions, renewer: LeaseRenewer, request: IdempotencyRequest): Promise<Decision> {
  if (!config.methods.has(request.method)) return PASS;
  const emit = emitter(config, request);
  const rawKey = request.header(config.header);
  if (rawKey === undefined) {
    if (!config.required(request)) return PASS;
    const error = new IdempotencyKeyMissingError(
      `${request.method} ${pathOf(request.url)} requires an Idempotency-Key header.`,
    );
    emit({ type: 'invalid_key', status: error.status, reason: 'missing' });
    return respond(config, error, request);
  }
  let key: string;
  try {
    key = parseIdempotencyKey(rawKey, config.maxKeyLength);
  } catch (error) {
    if (!(error instanceof IdempotencyKeyInvalidError)) throw error;
    emit({ type: 'invalid_key', status: error.status, reason: 'malformed' });
    return respond(config, error, request);
  }
  let body: Uint8Array | ParsedBody | null;
  try {
    body = await request.body(config.maxBodyBytes);
  } catch (error) {
    if (!(error instanceof IdempotencyBodyTooLargeError)) throw error;
    return respond(config, error, request);
  }
  if (config.signatures !== undefined) {
    const refused = await verifySignature(config, request, body);
    if (refused !== undefined) {
      emit({ type: 'invalid_signature', key, status: refused.status, reason: refused.code });
      return respond(config, refused, request);
    }
  }
  const scope = config.scope?.(request);
  const { limiter } = config;
  // `return await`: one microtask turn, where returning the promise would cost three.
  if (limiter === undefined) return await claim(config, renewer, emit, request, key, scope, body);
  // Before the claim, so a refused request creates or touches no record.
  const ticket = limiter.admit(limitScopeOf(scope, request));
  if (!(ticket instanceof LimitTicket)) {
    emit({ type: 'rate_limited', key, status: 429, reason: ticket.limit });
    return respond(config, rateLimited(ticket.limit), request, ticket.retryAfterMs);
  }
  let decision: Decision;
  try {
    decision = await claim(config, renewer, emit, request, key, scope, body);
  } catch (error) {
    ticket.refund();
    throw error;
  }
  if (decision instanceof ClaimedExecution) decision.holdUntilSettled(ticket);
  else ticket.refund();
  return decision;
}

/**
 * Who a limit counts a request for: its scope, else its client's address, else everyone without
 * either, together. Prefixed, so that a scope value cannot share an address's allowance.
 */
function limitScopeOf(scope: string | undefined, request: IdempotencyRequest): string {
  if (scope !== undefined) return `s:${scope}`;
  return request.remoteAddress === undefined ? '' : `a:${request.remoteAddress}`;
}

function rateLimited(limit: 'in_flight' | 'new_keys'): IdempotencyRateLimitedError {
  return new IdempotencyRateLimitedError(
    limit === 'in_flight'
      ? 'Too many requests with an Idempotency-Key are in progress for this caller at once; nothing was run. Retry after the time in Retry-After.'
      : 'This caller has started as many new Idempotency-Keys as it may within the current window; nothing was run. Retry after the time in Retry-After.',
  );
}

/** The claim of an admitted request and what follows from it: fingerprint, claim, and wait. */
async function claim(
  config: ResolvedOptions,
  renewer: LeaseRenewer,
  emit: Emit,
  request: IdempotencyRequest,
  key: string,
  scope: string | undefined,
  body: Uint8Array | ParsedBody | null,
): Promise<Decision> {
  const computed = config.fingerprint(request, body);
  // The default fingerprint is synchronous: awaiting a string would cost a microtask turn.
  const fingerprint = typeof computed === 'string' ? computed : await computed;
  const storeKey = storeKeyFor(key, scope);
  const claimInput = { key: storeKey, fingerprint, leaseMs: config.leaseMs, ttlMs: config.ttlMs };
  const deadline = config.concurrent === 'wait' ? Date.now() + config.waitTimeoutMs : 0;
  let pollMs = POLL_MIN_MS;
  const { store, syncStore } = config;
  for (;;) {
    let claim: ClaimResult;
    try {
      claim = await (syncStore !== undefined ? claimThisTurn(syncStore, claimInput) : store.claim(claimInput));
    } catch (error) {
      if (config.onStoreError === 'fail-open') {
        emit({ type: 'store_error', key, reason: 'claim', action: 'fail-open', error });
        return { action: 'pass', body };
      }
      const failure = new IdempotencyStoreUnavailableError(
        'The idempotency store is unavailable; nothing was run. Retry later.',
        {
          cause: error,
        },
      );
      emit({ type: 'store_error', key, status: 503, reason: 'claim', action: 'fail-closed', error });
      return respond(config, failure, request, STORE_RETRY_MS);
    }
    switch (claim.status) {
      case 'acquired':
        if (claim.recovered) emit({ type: 'recovered', key });
        return new ClaimedExecution(config, renewer, emit, request, key, claimInput, claim, body);
      case 'replay':
        emit({ type: 'replayed', key, status: claim.response.status });
        return { action: 'respond', response: replayOf(claim.response) };
      case 'mismatch': {
        const error = new IdempotencyMismatchError(
          'This Idempotency-Key was already used with a different request (method, path, query, body or credentials differ). Use a new key for a new request.',
          { status: config.mismatchStatus },
        );
        emit({ type: 'mismatch', key, status: error.status });
        return respond(config, error, request);
      }
      case 'in_flight': {
        const remaining = deadline - Date.now();
        if (remaining > 0) {
          if (store.waitForChange) {
            // A failed notification channel only costs latency: fall back to a poll, and let the next claim decide.
            await store
              .waitForChange(storeKey, Math.min(remaining, claim.retryAfterMs, NOTIFIED_RECHECK_MS))
              .catch(() => sleep(Math.min(remaining, pollMs)));
          } else {
            await sleep(Math.min(remaining, pollMs));
            pollMs = Math.min(pollMs * 2, POLL_MAX_MS);
          }
          continue;
        }
        const error = new IdempotencyConflictError(
          'A request with this Idempotency-Key is still being processed. Retry after the time in Retry-After.',
        );
        emit({ type: 'conflict', key, status: 409 });
        return respond(config, error, request, Math.min(claim.retryAfterMs, CONFLICT_RETRY_MS));
      }
    }
  }
}

/** The reason a keyed request's signature is refused, or `undefined` when it is accepted. */
async function verifySignature(
  config: ResolvedOptions,
  request: IdempotencyRequest,
  body: Uint8Array | ParsedBody | null,
): Promise<IdempotencyError | undefined> {
  const policy = config.signatures;
  if (policy === undefined) return undefined;
  if (body !== null && !(body instanceof Uint8Array)) {
    return new IdempotencySignatureInvalidError(
      'The body reached idempo already parsed, so its Content-Digest cannot be checked: mount idempo before the body parser. Nothing was run.',
    );
  }
  try {
    await verifyRequest(
      {
        method: request.method,
        scheme: policy.scheme,
        authority: request.header('host'),
        target: request.url,
        header: (name) => request.header(name),
      },
      body,
      policy,
    );
    return undefined;
  } catch (error) {
    if (error instanceof IdempotencyError && error.status === 401) return error;
    throw error;
  }
}

/**
 * The stored response plus the replay marker. Its fresh `Date` comes from the server that sends
 * it, as the original's did: Node's HTTP server (under every Node adapter and the gateway) adds
 * one to a response without it, and `toWebResponse` (web.ts) does for web `Response`s.
 */
function replayOf(stored: StoredResponse): IdempotencyResponse {
  return {
    status: stored.status,
    headers: [...stored.headers, [REPLAYED_HEADER, 'true']],
    body: stored.body,
  };
}

function respond(
  config: ResolvedOptions,
  error: IdempotencyError,
  request: IdempotencyRequest,
  retryAfterMs?: number,
): Decision {
  return { action: 'respond', response: errorResponse(config, error, request, retryAfterMs) };
}

const IGNORE_EVENT: Emit = () => {};

function emitter(config: ResolvedOptions, request: IdempotencyRequest): Emit {
  const { onEvent } = config;
  // Without an observer there is nothing to time or report: no clock read, no closure per request.
  if (!onEvent) return IGNORE_EVENT;
  const started = performance.now();
  return (partial) => {
    // Every call site passes a fresh literal: completing it in place costs less than a copy.
    const event = partial as IdempotencyEvent;
    event.method = request.method;
    event.url = request.url;
    event.durationMs = performance.now() - started;
    try {
      onEvent(event, request);
    } catch {
      // An observer's failure must not change what the client gets.
    }
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
