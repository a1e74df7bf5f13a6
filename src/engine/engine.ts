import type { ClaimResult, StoredResponse } from '../stores/contract.js';
import { retryAfterSeconds } from './duration.js';
import {
  IdempotencyBodyTooLargeError,
  IdempotencyConflictError,
  type IdempotencyError,
  IdempotencyKeyInvalidError,
  IdempotencyKeyMissingError,
  IdempotencyLeaseLostError,
  IdempotencyMismatchError,
  IdempotencyStoreError,
} from './errors.js';
import { storeKeyFor } from './fingerprint.js';
import { REPLAYED_HEADER } from './headers.js';
import { parseIdempotencyKey } from './key.js';
import { type ResolvedOptions, resolveOptions } from './options.js';
import { pathOf } from './path.js';
import type {
  Decision,
  Execution,
  Idempotency,
  IdempotencyContext,
  IdempotencyEvent,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyResponse,
  ParsedBody,
} from './types.js';
import { handleWebRequest } from './web.js';

const PASS: Decision = Object.freeze({ action: 'pass' });
/** A duplicate that may retry soon gets this hint; the original usually finishes well inside a second. */
const CONFLICT_RETRY_MS = 1_000;
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
  const engine: Idempotency = {
    begin: (request) => begin(config, request),
    handle: (request, handler) => handleWebRequest(engine, request, handler),
    formatError: (error, request) => config.formatError(error, request),
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
 *   claim ── acquired ──▶ execute (lease renewed) ──▶ commit: store | release (releaseOn, too large)
 *         │                                         └▶ abort: release
 *         ├─ replay ────▶ stored response + Idempotent-Replayed
 *         ├─ mismatch ──▶ 422 (or 400)
 *         ├─ in_flight ─▶ 409 + Retry-After, or wait for a change and claim again
 *         └─ throws ────▶ 503 (fail-closed) or pass (fail-open)
 */
async function begin(config: ResolvedOptions, request: IdempotencyRequest): Promise<Decision> {
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
  const computed = config.fingerprint(request, body);
  // The default fingerprint is synchronous: awaiting a string would cost a microtask turn.
  const fingerprint = typeof computed === 'string' ? computed : await computed;
  const storeKey = storeKeyFor(key, config.scope?.(request));
  const claimInput = { key: storeKey, fingerprint, leaseMs: config.leaseMs, ttlMs: config.ttlMs };
  const deadline = config.concurrent === 'wait' ? Date.now() + config.waitTimeoutMs : 0;
  let pollMs = POLL_MIN_MS;
  for (;;) {
    let claim: ClaimResult;
    try {
      claim = await config.store.claim(claimInput);
    } catch (error) {
      if (config.onStoreError === 'fail-open') {
        emit({ type: 'store_error', key, reason: 'claim', action: 'fail-open', error });
        return { action: 'pass', body };
      }
      const failure = new IdempotencyStoreError('The idempotency store is unavailable; nothing was run. Retry later.', {
        cause: error,
      });
      emit({ type: 'store_error', key, status: 503, reason: 'claim', action: 'fail-closed', error });
      return respond(config, failure, request, STORE_RETRY_MS);
    }
    switch (claim.status) {
      case 'acquired':
        if (claim.recovered) emit({ type: 'recovered', key });
        return startExecution(config, emit, request, key, storeKey, claim, body);
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
          if (config.store.waitForChange) {
            // A failed notification channel only costs latency: fall back to a poll, and let the next claim decide.
            await config.store
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

function startExecution(
  config: ResolvedOptions,
  emit: Emit,
  request: IdempotencyRequest,
  key: string,
  storeKey: string,
  claim: Extract<ClaimResult, { status: 'acquired' }>,
  body: Uint8Array | ParsedBody | null,
): Execution {
  const { store } = config;
  const { token } = claim;
  const steps = { ...claim.steps };
  let settled = false;

  const loseLease = () => {
    if (
      context.loseLease(new IdempotencyLeaseLostError('Another execution took this key over after the lease expired.'))
    ) {
      emit({ type: 'lease_lost', key });
    }
  };
  async function step<T>(name: string, fn: () => T | Promise<T>): Promise<T> {
    const saved = steps[name];
    if (saved !== undefined) return JSON.parse(saved) as T;
    const value = await fn();
    const text = JSON.stringify(value) ?? 'null';
    if ((await store.saveStep(storeKey, token, name, text)) === 'stale') {
      loseLease();
      throw new IdempotencyLeaseLostError(
        `Step "${name}" ran, but its result was refused: this execution lost its lease.`,
      );
    }
    steps[name] = text;
    return value;
  }
  const context = new ExecutionContext(key, storeKey, token, claim.recovered, step);

  // Renew at a third of the lease so two renewals can fail before a healthy owner is taken over.
  const renewal = setInterval(
    () => {
      store.renew(storeKey, token, config.leaseMs).then(
        (result) => {
          if (result === 'stale') {
            clearInterval(renewal);
            loseLease();
          }
        },
        (error: unknown) => emit({ type: 'store_error', key, reason: 'renew', error }),
      );
    },
    Math.max(1, Math.floor(config.leaseMs / 3)),
  );
  renewal.unref?.();

  const release = async (reason: string, status: number | undefined, error?: unknown) => {
    try {
      const result = await store.release(storeKey, token, config.ttlMs);
      if (result === 'stale') return loseLease();
      emit({
        type: 'released',
        key,
        reason,
        ...(status === undefined ? {} : { status }),
        ...(error === undefined ? {} : { error }),
      });
    } catch (storeError) {
      emit({ type: 'store_error', key, reason: 'release', action: 'response_sent', error: storeError });
    }
  };

  return {
    action: 'execute',
    body,
    context,
    async commit(response) {
      if (settled) return undefined;
      settled = true;
      clearInterval(renewal);
      if (response.body === null || response.body.length > config.maxResponseBytes) {
        await release('response_too_large', response.status);
        return undefined;
      }
      if (config.releases(response.status)) {
        await release('status', response.status);
        return undefined;
      }
      const stored: StoredResponse = {
        status: response.status,
        headers: response.headers.filter(([name]) => config.storesHeader(name)),
        body: response.body,
      };
      try {
        if ((await store.complete(storeKey, token, stored, config.ttlMs)) === 'stale') {
          loseLease();
          // Another execution owns the key now and its response is the one kept: answering with
          // this one would give the client a result no retry could replay.
          return errorResponse(
            config,
            new IdempotencyLeaseLostError(
              'This request ran, but another execution took its key over after the lease expired and its result is the one kept. Retry with the same key to get it.',
            ),
            request,
            CONFLICT_RETRY_MS,
          );
        }
        emit({ type: 'executed', key, status: response.status });
      } catch (error) {
        emit({ type: 'store_error', key, reason: 'complete', action: 'response_sent', error });
      }
      return undefined;
    },
    async abort(error) {
      if (settled) return;
      settled = true;
      clearInterval(renewal);
      await release('threw', undefined, error);
    },
  };
}

/**
 * The handler's view of one execution. `signal` is a getter on the prototype that makes the
 * AbortController on first use: an AbortSignal costs about 2.5 µs and most handlers never read
 * it, and an object literal with a getter of its own costs about 0.4 µs more to create than a
 * class instance (V8 cannot copy it from a boilerplate).
 */
class ExecutionContext implements IdempotencyContext {
  readonly key: string;
  readonly storeKey: string;
  readonly token: number;
  readonly recovered: boolean;
  readonly step: IdempotencyContext['step'];
  #controller: AbortController | undefined;
  #leaseLost: IdempotencyLeaseLostError | undefined;

  constructor(key: string, storeKey: string, token: number, recovered: boolean, step: IdempotencyContext['step']) {
    this.key = key;
    this.storeKey = storeKey;
    this.token = token;
    this.recovered = recovered;
    this.step = step;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      this.#controller = new AbortController();
      if (this.#leaseLost !== undefined) this.#controller.abort(this.#leaseLost);
    }
    return this.#controller.signal;
  }

  /** Aborts the signal, now or when it is made, with `reason`; false when the lease was already lost. */
  loseLease(reason: IdempotencyLeaseLostError): boolean {
    if (this.#leaseLost !== undefined) return false;
    this.#leaseLost = reason;
    this.#controller?.abort(reason);
    return true;
  }
}

let cachedDate = '';
let cachedDateSecond = 0;

/** The stored response plus the replay marker and a fresh `Date`. */
function replayOf(stored: StoredResponse): IdempotencyResponse {
  const now = Date.now();
  const second = Math.floor(now / 1_000);
  if (second !== cachedDateSecond) {
    cachedDateSecond = second;
    cachedDate = new Date(now).toUTCString();
  }
  return {
    status: stored.status,
    headers: [...stored.headers, [REPLAYED_HEADER, 'true'], ['date', cachedDate]],
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

function errorResponse(
  config: ResolvedOptions,
  error: IdempotencyError,
  request: IdempotencyRequest,
  retryAfterMs?: number,
): IdempotencyResponse {
  const response = config.formatError(error, request);
  if (retryAfterMs !== undefined) response.headers.push(['retry-after', retryAfterSeconds(retryAfterMs)]);
  return response;
}

type Emit = (event: Omit<IdempotencyEvent, 'method' | 'url' | 'durationMs'>) => void;

const IGNORE_EVENT: Emit = () => {};

function emitter(config: ResolvedOptions, request: IdempotencyRequest): Emit {
  const { onEvent } = config;
  // Without an observer there is nothing to time or report: no clock read, no closure per request.
  if (!onEvent) return IGNORE_EVENT;
  const started = performance.now();
  return (event) => {
    try {
      onEvent({ ...event, method: request.method, url: request.url, durationMs: performance.now() - started });
    } catch {
      // An observer's failure must not change what the client gets.
    }
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
