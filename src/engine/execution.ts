import type { ClaimResult, FencedResult, StoredResponse } from '../stores/contract.js';
import { retryAfterSeconds } from './duration.js';
import { type IdempotencyError, IdempotencyLeaseLostError } from './errors.js';
import type { LeaseRenewer, Renewable } from './lease-renewer.js';
import type { ResolvedOptions } from './options.js';
import type {
  CapturedResponse,
  Execution,
  IdempotencyContext,
  IdempotencyEvent,
  IdempotencyRequest,
  IdempotencyResponse,
  ParsedBody,
} from './types.js';

/** A duplicate that may retry soon gets this hint; the original usually finishes well inside a second. */
export const CONFLICT_RETRY_MS = 1_000;

/** Reports one event of a request (a fresh object literal, which it completes); a no-op when no observer is set. */
export type Emit = (event: Omit<IdempotencyEvent, 'method' | 'url' | 'durationMs'>) => void;

const NO_STEPS: Readonly<Record<string, string>> = Object.freeze({});
const nothing = (): undefined => undefined;

/**
 * The run of a handler under a key this process claimed: renews its lease while it runs, and
 * stores or releases the result. One class instance rather than a closure per method: a request
 * makes one object here instead of seven.
 */
export class ClaimedExecution implements Execution, Renewable {
  readonly action = 'execute' as const;
  readonly body: Uint8Array | ParsedBody | null;
  readonly context: ExecutionContext;
  renewedAt = Date.now();
  renewing = false;
  renewerSlot = -1;
  readonly #config: ResolvedOptions;
  readonly #renewer: LeaseRenewer;
  readonly #emit: Emit;
  readonly #request: IdempotencyRequest;
  readonly #key: string;
  readonly #storeKey: string;
  readonly #token: number;
  /** The claim's steps until this run saves one; then a copy of its own. */
  #steps: Readonly<Record<string, string>>;
  #ownSteps = false;
  #settled = false;

  constructor(
    config: ResolvedOptions,
    renewer: LeaseRenewer,
    emit: Emit,
    request: IdempotencyRequest,
    key: string,
    storeKey: string,
    claim: Extract<ClaimResult, { status: 'acquired' }>,
    body: Uint8Array | ParsedBody | null,
  ) {
    this.#config = config;
    this.#renewer = renewer;
    this.#emit = emit;
    this.#request = request;
    this.#key = key;
    this.#storeKey = storeKey;
    this.#token = claim.token;
    this.#steps = claim.steps ?? NO_STEPS;
    this.body = body;
    this.context = new ExecutionContext(key, storeKey, claim.token, claim.recovered, (name, fn) =>
      this.#step(name, fn),
    );
    renewer.add(this);
  }

  renew(): void {
    this.renewing = true;
    const startedAt = Date.now();
    this.#config.store.renew(this.#storeKey, this.#token, this.#config.leaseMs).then(
      (result) => {
        this.renewing = false;
        if (result === 'stale') {
          this.#renewer.delete(this);
          this.#loseLease();
        } else {
          this.renewedAt = startedAt;
        }
      },
      (error: unknown) => {
        this.renewing = false;
        this.#emit({ type: 'store_error', key: this.#key, reason: 'renew', error });
      },
    );
  }

  async commit(response: CapturedResponse): Promise<IdempotencyResponse | undefined> {
    return this.commitNow(response);
  }

  commitNow(response: CapturedResponse): IdempotencyResponse | undefined | Promise<IdempotencyResponse | undefined> {
    if (!this.#settle()) return undefined;
    const config = this.#config;
    if (response.body === null || response.body.length > config.maxResponseBytes) {
      return this.#release('response_too_large', response.status).then(nothing);
    }
    if (config.releases(response.status)) return this.#release('status', response.status).then(nothing);
    const stored: StoredResponse = {
      status: response.status,
      headers: response.headers.filter(([name]) => config.storesHeader(name)),
      body: response.body,
    };
    const { store, syncStore } = config;
    if (syncStore === undefined) {
      return store
        .complete(this.#storeKey, this.#token, stored, config.ttlMs)
        .then((result) => this.#completed(result, response.status))
        .catch((error: unknown) => this.#completeFailed(error));
    }
    try {
      return this.#completed(syncStore.complete(this.#storeKey, this.#token, stored, config.ttlMs), response.status);
    } catch (error) {
      return this.#completeFailed(error);
    }
  }

  #completed(result: FencedResult, status: number): IdempotencyResponse | undefined {
    if (result === 'stale') {
      this.#loseLease();
      // Another execution owns the key now and its response is the one kept: answering with
      // this one would give the client a result no retry could replay.
      return errorResponse(
        this.#config,
        new IdempotencyLeaseLostError(
          'This request ran, but another execution took its key over after the lease expired and its result is the one kept. Retry with the same key to get it.',
        ),
        this.#request,
        CONFLICT_RETRY_MS,
      );
    }
    this.#emit({ type: 'executed', key: this.#key, status });
    return undefined;
  }

  #completeFailed(error: unknown): undefined {
    this.#emit({ type: 'store_error', key: this.#key, reason: 'complete', action: 'response_sent', error });
    return undefined;
  }

  async abort(error: unknown): Promise<void> {
    if (this.#settle()) await this.#release('threw', undefined, error);
  }

  /** Marks the run finished; false when it already was. */
  #settle(): boolean {
    if (this.#settled) return false;
    this.#settled = true;
    this.#renewer.delete(this);
    return true;
  }

  async #step<T>(name: string, fn: () => T | Promise<T>): Promise<T> {
    const saved = this.#steps[name];
    if (saved !== undefined) return JSON.parse(saved) as T;
    const value = await fn();
    const text = JSON.stringify(value) ?? 'null';
    if ((await this.#config.store.saveStep(this.#storeKey, this.#token, name, text)) === 'stale') {
      this.#loseLease();
      throw new IdempotencyLeaseLostError(
        `Step "${name}" ran, but its result was refused: this execution lost its lease.`,
      );
    }
    if (!this.#ownSteps) {
      this.#steps = { ...this.#steps };
      this.#ownSteps = true;
    }
    (this.#steps as Record<string, string>)[name] = text;
    return value;
  }

  async #release(reason: string, status: number | undefined, error?: unknown): Promise<void> {
    try {
      const result = await this.#config.store.release(this.#storeKey, this.#token, this.#config.ttlMs);
      if (result === 'stale') return this.#loseLease();
      this.#emit({
        type: 'released',
        key: this.#key,
        reason,
        ...(status === undefined ? {} : { status }),
        ...(error === undefined ? {} : { error }),
      });
    } catch (storeError) {
      this.#emit({
        type: 'store_error',
        key: this.#key,
        reason: 'release',
        action: 'response_sent',
        error: storeError,
      });
    }
  }

  #loseLease(): void {
    if (
      this.context.loseLease(
        new IdempotencyLeaseLostError('Another execution took this key over after the lease expired.'),
      )
    ) {
      this.#emit({ type: 'lease_lost', key: this.#key });
    }
  }
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
  /** An own property, not a method, so that `const { step } = ctx` keeps working. */
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

/** idempo's error response for `error`, with `Retry-After` when a retry should wait. */
export function errorResponse(
  config: ResolvedOptions,
  error: IdempotencyError,
  request: IdempotencyRequest,
  retryAfterMs?: number,
): IdempotencyResponse {
  const response = config.formatError(error, request);
  if (retryAfterMs !== undefined) response.headers.push(['retry-after', retryAfterSeconds(retryAfterMs)]);
  return response;
}
