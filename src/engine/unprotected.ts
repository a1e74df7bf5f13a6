import { type IdempotencyStore, IdempotencyTransactionUnsupportedError } from '../vocabulary/index.js';
import { runTransaction, type TransactionFunction, transactionArguments } from './transaction.js';
import type { IdempotencyContext } from './types.js';

const never = new AbortController().signal;

async function refuseTransaction(): Promise<never> {
  throw new IdempotencyTransactionUnsupportedError(
    'ctx.transaction: idempo does not protect this request (no key, a method not covered, or fail-open), so it has no record to commit with; nothing was run. Run the transaction yourself.',
  );
}

/** A transaction of the store's with no step: the request has no record to commit with. */
function plainTransaction(store: IdempotencyStore) {
  return async function transaction(
    nameOrFn: string | TransactionFunction<unknown>,
    maybeFn?: TransactionFunction<unknown>,
  ): Promise<unknown> {
    const { fn } = transactionArguments(nameOrFn, maybeFn);
    return (await runTransaction(store, undefined, fn)).value;
  };
}

/**
 * The context a handler gets when idempo does not protect the request (method not covered, no
 * key, or fail-open): steps simply run, and so do transactions, as plain transactions of the
 * store's (without one, `ctx.transaction` rejects with `IdempotencyTransactionUnsupportedError`).
 */
export function unprotectedContext(store?: IdempotencyStore): IdempotencyContext {
  return {
    key: '',
    storeKey: '',
    token: 0,
    recovered: false,
    signal: never,
    step: async (_name, fn) => fn(),
    transaction: (store === undefined
      ? refuseTransaction
      : plainTransaction(store)) as IdempotencyContext['transaction'],
  };
}
