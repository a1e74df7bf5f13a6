/**
 * `ctx.transaction()`: the application's database writes committed together with a step of
 * idempo's record, in one transaction of the store's (see docs/transactions.md).
 *
 * Why a step and not the completion: an HTTP response is known only once the handler has
 * returned, and holding the application's transaction open until then would hold its locks while
 * the handler does everything else (and would allow one transaction per run). The step holds
 * the transaction's result under the execution's fencing token; a later execution of the key
 * finds it and returns it instead of running the transaction again:
 *
 * ```
 * crash before the transaction ──────────────▶ nothing committed: the retry runs it (once)
 * crash inside it, before COMMIT ────────────▶ rolled back with the step: the retry runs it (once)
 * crash after COMMIT, before the completion ─▶ effect and step committed: the retry (after the
 *                                              lease) gets the step back, builds its response
 *                                              from it, and the effect is not run again
 * crash after the completion ────────────────▶ the retry replays the stored response
 * owner stalled past its lease ──────────────▶ its step write is refused: rolled back, and
 *                                              IdempotencyLeaseLostError
 * ```
 *
 * @module
 */
import {
  type FencedResult,
  IdempotencyConfigInvalidError,
  type IdempotencyStore,
  IdempotencyTransactionUnsupportedError,
  type TransactionStep,
  type TransactionWork,
} from '../vocabulary/index.js';

/** An application's function passed to `ctx.transaction()`, as the engine sees it. */
export type TransactionFunction<T> = (client: unknown) => T | Promise<T>;

/** `ctx.transaction(fn)` or `ctx.transaction(name, fn)`: the name (or `undefined`) and the function. */
export function transactionArguments<T>(
  nameOrFn: string | TransactionFunction<T>,
  maybeFn: TransactionFunction<T> | undefined,
): { name: string | undefined; fn: TransactionFunction<T> } {
  const named = typeof nameOrFn === 'string';
  const fn = named ? maybeFn : nameOrFn;
  if (typeof fn !== 'function') {
    throw new IdempotencyConfigInvalidError(
      'ctx.transaction: expected a function, as transaction(fn) or transaction(name, fn)',
    );
  }
  if (named && nameOrFn === '') throw new IdempotencyConfigInvalidError('ctx.transaction: a name must not be empty');
  return { name: named ? nameOrFn : undefined, fn };
}

/** What one transaction produced: whether it committed, and `fn`'s result with its JSON text. */
export interface TransactionOutcome<T> {
  result: FencedResult;
  value: T;
  text: string;
}

/**
 * Runs `fn` through the store's transaction, saving its result as `step` (none for a request
 * idempo does not protect). A synchronous `fn` stays synchronous inside the store's work, which
 * SQLite's transactions need.
 */
export async function runTransaction<T>(
  store: IdempotencyStore,
  step: TransactionStep | undefined,
  fn: TransactionFunction<T>,
): Promise<TransactionOutcome<T>> {
  if (typeof store.transaction !== 'function') {
    throw new IdempotencyTransactionUnsupportedError(
      'ctx.transaction needs a store that keeps its records in your database: the PostgreSQL store, or the SQLite store with its `database` option. This store has no transactions of your database; nothing was run. For effects elsewhere use ctx.step.',
    );
  }
  const outcome = { value: undefined as T, text: '' };
  const keep = (value: T): string => {
    outcome.value = value;
    outcome.text = JSON.stringify(value) ?? 'null';
    return outcome.text;
  };
  const work: TransactionWork = (client) => {
    const produced = fn(client);
    return isThenable(produced) ? Promise.resolve(produced).then(keep) : keep(produced);
  };
  const result = await store.transaction(step, work);
  return { result, value: outcome.value, text: outcome.text };
}

function isThenable<T>(value: T | PromiseLike<T>): value is PromiseLike<T> {
  return typeof (value as { then?: unknown } | null)?.then === 'function';
}
