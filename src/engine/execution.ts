import {
  type ClaimInput,
  type ClaimResult,
  type FencedResult,
  IdempotencyError,
  IdempotencyLeaseLostError,
  IdempotencyResponseNotKeptError,
  IdempotencyResultNotStoredError,
  IdempotencyTransactionUnsupportedError,
  type StoredResponse,
} from '../vocabulary/index.js';
import { CLIENT_GONE, errorResponse } from './error-responses.js';
import type { LeaseRenewer, Renewable } from './lease-renewer.js';
import type { LimitTicket } from './limits.js';
import type { ResolvedOptions } from './options.js';
import { runTransaction, type TransactionFunction, transactionArguments } from './transaction.js';
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
/** First pause before a failed completion or step save is tried again; it doubles up to the cap. */
const STORE_RETRY_FIRST_MS = 25;
const STORE_RETRY_MAX_MS = 250;

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
  /** The claim that made this execution, to claim again when a completion's outcome is unknown. */
  readonly #claimInput: ClaimInput;
  readonly #token: number;
  /** The claim's steps until this run saves one; then a copy of its own. */
  #steps: Readonly<Record<string, string>>;
  #ownSteps = false;
  #settled = false;
  /** The client went away before the response ended; the work goes on. */
  #clientGone = false;
  /** Pending work passed to track(): while there is some, the lease is renewed even without a client. */
  #tracked = 0;
  /** A step's result could not be stored: whatever the handler does next, the key must not be released. */
  #mustKeep = false;
  /** Unnamed `ctx.transaction()` calls so far: the next one is `transaction:<n+1>`. */
  #transactions = 0;
  /** A `ctx.transaction()` of this run is open: another one now would not be part of it. */
  #transactionOpen = false;
  /** This run's place in its scope's keys in flight (`limits`), freed when the run ends. */
  #limitTicket: LimitTicket | undefined;

  constructor(
    config: ResolvedOptions,
    renewer: LeaseRenewer,
    emit: Emit,
    request: IdempotencyRequest,
    key: string,
    claimInput: ClaimInput,
    claim: Extract<ClaimResult, { status: 'acquired' }>,
    body: Uint8Array | ParsedBody | null,
  ) {
    const storeKey = claimInput.key;
    this.#config = config;
    this.#renewer = renewer;
    this.#emit = emit;
    this.#request = request;
    this.#key = key;
    this.#storeKey = storeKey;
    this.#claimInput = claimInput;
    this.#token = claim.token;
    this.#steps = claim.steps ?? NO_STEPS;
    this.body = body;
    this.context = new ExecutionContext(key, storeKey, claim.token, claim.recovered, this, (name, fn) =>
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
          // A run that ended is finishing its completion, which reports a lost lease itself.
          if (!this.#settled) this.#loseLease();
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

  /** Holds `ticket`'s place in flight until this run ends (commit or abort). */
  holdUntilSettled(ticket: LimitTicket): void {
    if (this.#settled) ticket.finish();
    else this.#limitTicket = ticket;
  }

  clientGone(): void {
    this.#clientGone = true;
    // Nothing the adapter can see is still working: renewing on would pin the key for as long as
    // the process lives. The handler may still end within the lease, and that result is stored.
    if (this.#tracked === 0 && !this.#settled) this.#renewer.delete(this);
  }

  track(work: PromiseLike<unknown>): void {
    this.#tracked++;
    const done = () => {
      this.#tracked--;
      if (this.#clientGone && this.#tracked === 0 && !this.#settled) this.#renewer.delete(this);
    };
    work.then(done, done);
  }

  async commit(response: CapturedResponse): Promise<IdempotencyResponse | undefined> {
    return this.commitNow(response);
  }

  commitNow(response: CapturedResponse): IdempotencyResponse | undefined | Promise<IdempotencyResponse | undefined> {
    if (this.#settled) return undefined;
    this.#settled = true;
    this.#limitTicket?.finish();
    const config = this.#config;
    if (config.releases(response.status)) {
      this.#renewer.delete(this);
      // A step ran whose result the store refused to keep: releasing would let a retry run it again.
      if (this.#mustKeep) return this.#keep(undefined);
      return this.#release('status', response.status).then(nothing);
    }
    const stored = this.#storedFormOf(response);
    const { store, syncStore } = config;
    if (syncStore === undefined) {
      return store.complete(this.#storeKey, this.#token, stored, config.ttlMs).then(
        (result) => this.#completed(result, response.status),
        (error: unknown) => this.#completeLater(stored, response.status, error),
      );
    }
    try {
      return this.#completed(syncStore.complete(this.#storeKey, this.#token, stored, config.ttlMs), response.status);
    } catch (error) {
      return this.#completeLater(stored, response.status, error);
    }
  }

  /**
   * What the store keeps for `response`. A body past `maxResponseBytes` (or not captured) is not
   * kept, but the operation ran: the key is completed all the same, with idempo's answer that
   * names the original status, so a retry never runs it again within the ttl.
   */
  #storedFormOf(response: CapturedResponse): StoredResponse {
    const config = this.#config;
    if (response.body === null || response.body.length > config.maxResponseBytes) {
      const notKept = new IdempotencyResponseNotKeptError(
        `The request with this Idempotency-Key already completed with status ${response.status}, but its response was larger than ${config.maxResponseBytes} bytes and was not kept. It will not run again; fetch the result another way.`,
        { originalStatus: response.status },
      );
      const answer = errorResponse(config, notKept, this.#request);
      return {
        status: answer.status,
        headers: answer.headers.filter(([name]) => config.storesHeader(name)),
        body: answer.body,
      };
    }
    return {
      status: response.status,
      headers: response.headers.filter(([name]) => config.storesHeader(name)),
      body: response.body,
    };
  }

  #completed(result: FencedResult, status: number): IdempotencyResponse | undefined {
    this.#renewer.delete(this);
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

  /**
   * The store failed to complete: the work ran, so releasing would let a retry run it again, and
   * answering with the success would give the client a result no retry could replay. The
   * completion is tried again, fenced, with the lease still renewed and the response held, for up
   * to `completeTimeout`; past that (or sooner, if idempo gives up) the client is told the result
   * was not stored (`503`) and renewal stops, while idempo goes on trying in the background.
   */
  #completeLater(stored: StoredResponse, status: number, error: unknown): Promise<IdempotencyResponse | undefined> {
    this.#emit({ type: 'store_error', key: this.#key, reason: 'complete', action: 'retrying', error });
    const config = this.#config;
    const notStored = () =>
      errorResponse(
        config,
        new IdempotencyResultNotStoredError(
          'This request ran, but the idempotency store failed while its result was being saved, so it is not returned: no retry could replay it. Retry with the same key after Retry-After: you get 409 while idempo keeps trying to save it, then the stored result.',
          { cause: error },
        ),
        this.#request,
        CONFLICT_RETRY_MS,
      );
    const attempt = () => config.store.complete(this.#storeKey, this.#token, stored, config.ttlMs);
    const answered = this.#retryStore(attempt)
      // A failed attempt may have been applied with only its reply lost: then the record is
      // completed under this token, and the retry is refused as stale. Look before calling it lost.
      .then((result) => (result === 'stale' ? this.#retryStore(() => this.#landed(stored)) : result))
      .then(
        (result) => this.#completed(result, status),
        (lastError: unknown) => {
          this.#renewer.delete(this);
          this.#emit({
            type: 'store_error',
            key: this.#key,
            reason: 'complete',
            action: 'result_lost',
            error: lastError,
          });
          return notStored();
        },
      );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const giveUp = new Promise<IdempotencyResponse>((resolve) => {
      timer = setTimeout(() => {
        // From here on the lease is left to run out: idempo keeps trying, and past the lease a
        // retry may recover the key rather than wait for a store that stays down.
        this.#renewer.delete(this);
        resolve(notStored());
      }, config.completeTimeoutMs);
    });
    return Promise.race([answered, giveUp]).finally(() => clearTimeout(timer));
  }

  /**
   * After a completion whose outcome was unknown was refused as stale: `'ok'` when the record holds
   * this response (the earlier attempt landed, or an identical one did: a retry replays the same
   * bytes either way), `'stale'` when another owner's result or run holds the key. A key found free
   * (released by another owner, or expired) is claimed and completed with this response: the work
   * ran, and keeping its result is what stops a retry from running it again.
   */
  async #landed(stored: StoredResponse): Promise<FencedResult> {
    const { store, ttlMs } = this.#config;
    const found = await store.claim(this.#claimInput);
    if (found.status === 'replay') return sameResponse(found.response, stored) ? 'ok' : 'stale';
    if (found.status !== 'acquired') return 'stale';
    return store.complete(this.#storeKey, found.token, stored, ttlMs);
  }

  /**
   * Calls a fenced store write until it answers, pausing between tries, until `until` and for at
   * most two leases after the last renewal that reached the store. Trying past the lease is safe:
   * the write is fenced, so once a retry has taken the key over it is refused; until then it still
   * lands, and a store that comes back just as the lease runs out keeps the result rather than
   * letting a retry run the work again. Rejects with the last error when time runs out.
   */
  async #retryStore(attempt: () => Promise<FencedResult>, until = Number.POSITIVE_INFINITY): Promise<FencedResult> {
    let pauseMs = STORE_RETRY_FIRST_MS;
    for (;;) {
      const deadline = Math.min(until, this.renewedAt + 2 * this.#config.leaseMs);
      const wait = Math.min(pauseMs, deadline - Date.now());
      if (wait > 0) await sleep(wait);
      try {
        return await attempt();
      } catch (error) {
        if (Date.now() >= deadline) throw error;
      }
      pauseMs = Math.min(pauseMs * 2, STORE_RETRY_MAX_MS);
    }
  }

  async abort(error: unknown): Promise<void> {
    if (this.#settled) return;
    this.#settled = true;
    this.#limitTicket?.finish();
    this.#renewer.delete(this);
    if (this.#mustKeep || (error instanceof IdempotencyError && error.outcomeUnknown)) return this.#keep(error);
    if (error === CLIENT_GONE && this.context.recovered) return this.#handBack();
    // A client that went away before the handler started is not a handler that threw.
    await this.#release(error === CLIENT_GONE ? 'client_gone' : 'threw', undefined, error);
  }

  /**
   * A key taken over from an owner whose lease passed (a crash mid-run), whose client left before
   * the handler started. Nothing ran here, but the earlier owner's work may have happened: a
   * release would forget that, and the next claim would run the work without `recovered`. So the
   * key goes back as the takeover found it, in flight with its lease already passed (a renewal to
   * now), and the next claim recovers it. If the store cannot be reached, this lease passes in
   * its time, with the same result.
   */
  async #handBack(): Promise<void> {
    try {
      if ((await this.#config.store.renew(this.#storeKey, this.#token, 0)) === 'stale') return this.#loseLease();
    } catch (error) {
      this.#emit({ type: 'store_error', key: this.#key, reason: 'renew', action: 'response_sent', error });
    }
    this.#emit({ type: 'outcome_unknown', key: this.#key, reason: 'client_gone' });
  }

  /**
   * The work may have happened: the key stays in flight until the lease passes, and the next
   * claim recovers it, rather than being released for a retry to run the work again.
   */
  #keep(error: unknown): undefined {
    this.#emit({
      type: 'outcome_unknown',
      key: this.#key,
      reason: this.#mustKeep ? 'step_not_stored' : (error as IdempotencyError).code,
      ...(error === undefined ? {} : { error }),
    });
    return undefined;
  }

  /** Keeps a stored step's result for later calls of this run; the claim's steps are shared, so copied first. */
  #remember(name: string, text: string): void {
    if (!this.#ownSteps) {
      this.#steps = { ...this.#steps };
      this.#ownSteps = true;
    }
    (this.#steps as Record<string, string>)[name] = text;
  }

  async #step<T>(name: string, fn: () => T | Promise<T>): Promise<T> {
    const saved = this.#steps[name];
    if (saved !== undefined) return JSON.parse(saved) as T;
    const value = await fn();
    const text = JSON.stringify(value) ?? 'null';
    if ((await this.#saveStep(name, text)) === 'stale') {
      this.#loseLease();
      throw new IdempotencyLeaseLostError(
        `Step "${name}" ran, but its result was refused: this execution lost its lease.`,
      );
    }
    this.#remember(name, text);
    return value;
  }

  /**
   * `ctx.transaction()`: a step whose result commits in the same transaction as the application's
   * writes (src/engine/transaction.ts). A stored result is returned without running `fn`; a lease
   * known to be lost runs nothing; a transaction refused as stale was rolled back. A store error
   * needs no retry here: the writes and the step went together, committed or not, so whatever
   * the handler then does (a release included) cannot make them run twice.
   */
  async runTransaction<T>(nameOrFn: string | TransactionFunction<T>, maybeFn?: TransactionFunction<T>): Promise<T> {
    const { name = `transaction:${++this.#transactions}`, fn } = transactionArguments(nameOrFn, maybeFn);
    const saved = this.#steps[name];
    if (saved !== undefined) return JSON.parse(saved) as T;
    if (this.context.signal.aborted) {
      throw new IdempotencyLeaseLostError(
        `Transaction "${name}" was not run: this execution lost its lease and another took the key over.`,
      );
    }
    if (this.#transactionOpen) {
      // A nested one would take a second connection and commit on its own, outside the first.
      throw new IdempotencyTransactionUnsupportedError(
        `ctx.transaction: transaction "${name}" was started while another of this run was still open (nested, or run concurrently); nothing was run. Run them one after the other.`,
      );
    }
    const step = { key: this.#storeKey, token: this.#token, name };
    this.#transactionOpen = true;
    let outcome: Awaited<ReturnType<typeof runTransaction<T>>>;
    try {
      outcome = await runTransaction(this.#config.store, step, fn);
    } finally {
      this.#transactionOpen = false;
    }
    const { result, value, text } = outcome;
    if (result === 'stale') {
      this.#loseLease();
      throw new IdempotencyLeaseLostError(
        `Transaction "${name}" was rolled back: this execution lost its lease and another took the key over.`,
      );
    }
    this.#remember(name, text);
    return value;
  }

  /**
   * Saves a step's result. `fn` has run, so a store failure here must not end in a release: the
   * save is tried again for up to `completeTimeout`, and if it still fails the key is kept in
   * flight and the handler is told. The save goes on in the background, as a completion's does,
   * for up to two leases after the last renewal: a store that comes back (a failover that ends)
   * before a retry takes the key over then keeps the step, and that retry replays it instead of
   * running `fn` again.
   */
  async #saveStep(name: string, text: string): Promise<FencedResult> {
    const attempt = () => this.#config.store.saveStep(this.#storeKey, this.#token, name, text);
    try {
      return await attempt();
    } catch (error) {
      this.#emit({ type: 'store_error', key: this.#key, reason: 'step', action: 'retrying', error });
      try {
        return await this.#retryStore(attempt, Date.now() + this.#config.completeTimeoutMs);
      } catch (lastError) {
        this.#mustKeep = true;
        this.#retryStore(attempt).then(nothing, (finalError: unknown) => {
          this.#emit({ type: 'store_error', key: this.#key, reason: 'step', action: 'result_lost', error: finalError });
        });
        throw new IdempotencyResultNotStoredError(
          `Step "${name}" ran, but the idempotency store failed while its result was being saved; the key is kept so that nothing runs twice.`,
          { cause: lastError },
        );
      }
    }
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
 * AbortController on first use: an AbortSignal is costly to make and most handlers never read
 * it, and an object literal with a getter of its own costs more to create than a class instance
 * (V8 cannot copy it from a boilerplate).
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
  readonly #execution: ClaimedExecution;
  #transaction: IdempotencyContext['transaction'] | undefined;

  constructor(
    key: string,
    storeKey: string,
    token: number,
    recovered: boolean,
    execution: ClaimedExecution,
    step: IdempotencyContext['step'],
  ) {
    this.key = key;
    this.storeKey = storeKey;
    this.token = token;
    this.recovered = recovered;
    this.#execution = execution;
    this.step = step;
  }

  /**
   * Made on first use and kept, so that `const { transaction } = ctx` works as for `step`,
   * without a closure per request for handlers that never use it.
   */
  get transaction(): IdempotencyContext['transaction'] {
    if (this.#transaction === undefined) {
      const execution = this.#execution;
      this.#transaction = ((nameOrFn: string | TransactionFunction<unknown>, fn?: TransactionFunction<unknown>) =>
        execution.runTransaction(nameOrFn, fn)) as IdempotencyContext['transaction'];
    }
    return this.#transaction;
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

function sameResponse(a: StoredResponse, b: StoredResponse): boolean {
  if (a.status !== b.status || a.headers.length !== b.headers.length || a.body.length !== b.body.length) return false;
  for (let i = 0; i < a.headers.length; i++) {
    const [name, value] = a.headers[i] as [string, string];
    const [otherName, otherValue] = b.headers[i] as [string, string];
    if (name !== otherName || value !== otherValue) return false;
  }
  // Not Buffer.compare: the engine also runs where there is no Buffer (Workers, Deno, browsers).
  for (let i = 0; i < a.body.length; i++) if (a.body[i] !== b.body[i]) return false;
  return true;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
