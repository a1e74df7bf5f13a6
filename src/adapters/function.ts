/**
 * Idempotent functions: the protocol for work that is not an HTTP request (a queue message, a
 * webhook delivery, a cron job). A call is mapped onto the engine as a request whose key comes
 * from the input and whose body is the input, so a function gets exactly what an HTTP route gets:
 * one run across processes, the result replayed, duplicates refused or waited for, another input
 * under the same key refused, leases and fencing, `ctx.step`, and the unknown-outcome rules.
 *
 * @module
 */
import { createIdempotency } from '../engine/engine.js';
import type {
  IdempotencyContext,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyResponse,
} from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import {
  IdempotencyConfigInvalidError,
  IdempotencyError,
  IdempotencyResponseNotKeptError,
} from '../vocabulary/index.js';

/** How a function's result is written to the store and read back on a replay. */
export interface ResultCodec<R> {
  encode(result: R): Uint8Array | string;
  decode(bytes: Uint8Array): R;
}

/** Options of {@link makeIdempotent}: the engine's (a `store` at least) plus how a call maps onto a key. */
export interface IdempotentFunctionOptions<I, R>
  extends Omit<IdempotencyOptions, 'methods' | 'required' | 'header' | 'scope' | 'errorFormat' | 'fingerprint'> {
  /**
   * The idempotency key of a call, from its input: a message id, an event id, or a hash of the
   * fields that make two calls the same. The same rules as the `Idempotency-Key` header apply
   * (visible ASCII, at most `maxKeyLength`).
   */
  key(input: I): string;
  /**
   * Namespaces the keys, so two functions may see the same key (a message id) and still run once
   * each. Defaults to the function's own name; required when it has none.
   * @default fn.name
   */
  name?: string;
  /**
   * The part of the input that must be the same when a key is used again: a call with the same
   * key and a different input is refused (`IdempotencyMismatchError`). Compared as canonical JSON.
   * @default the whole input
   */
  fingerprint?(input: I): unknown;
  /**
   * How results are stored. JSON by default: `undefined` is kept as such, and a result JSON
   * cannot write (a `bigint`, a cycle) keeps the run completed without its result, so a retry
   * gets `IdempotencyResponseNotKeptError` rather than running it again.
   * @default JSON
   */
  codec?: ResultCodec<R>;
}

/** A function made idempotent: call it as the original, with the same input, as often as needed. */
export type IdempotentFunction<I, R> = (input: I) => Promise<R>;

const JSON_CODEC: ResultCodec<unknown> = {
  encode: (result) => (result === undefined ? '' : JSON.stringify(result)),
  decode: (bytes) => (bytes.byteLength === 0 ? undefined : JSON.parse(new TextDecoder().decode(bytes))),
};

/** The header the engine reads the key from; internal to the mapping. */
const KEY_HEADER = 'idempotency-key';
const RESULT_TYPE = 'application/json';
/** The status of IdempotencyResponseNotKeptError, as the engine stores it. */
const NOT_KEPT = 410;

/**
 * Wraps `fn` so that each key runs it once, whatever the number of calls, processes and crashes:
 * later calls with the key get the first call's result. `fn` receives the input and the
 * execution's context (`ctx.step`, `ctx.recovered`, `ctx.signal`). What it throws releases the
 * key (the next call runs it again), unless it is an idempo error whose outcome is unknown;
 * idempo's own refusals are thrown as its coded errors (`IdempotencyConflictError` while another
 * call runs it, `IdempotencyMismatchError` for another input under the key, …).
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { makeIdempotent } from 'idempo/functions';
 * import { createRedisStore } from 'idempo/redis';
 *
 * const handleOrder = makeIdempotent(
 *   async (message: { id: string; orderId: string; amount: number }, ctx) => {
 *     const charge = await ctx.step('charge', () => payments.charge(message.orderId, message.amount));
 *     return { chargeId: charge.id };
 *   },
 *   { store: createRedisStore({ client: new Redis() }), name: 'handle-order', key: (message) => message.id },
 * );
 * // Runs once per message id, however often the message is delivered.
 * await handleOrder({ id: 'msg-1', orderId: 'order-1', amount: 1200 });
 * ```
 */
export function makeIdempotent<I, R>(
  fn: (input: I, ctx: IdempotencyContext) => R | Promise<R>,
  options: IdempotentFunctionOptions<I, R>,
): IdempotentFunction<I, R> {
  const { key, name = fn.name, fingerprint = (input: I) => input, codec, ...engineOptions } = options;
  if (typeof fn !== 'function') throw new IdempotencyConfigInvalidError('makeIdempotent: expected a function');
  if (typeof key !== 'function') {
    throw new IdempotencyConfigInvalidError('makeIdempotent: `key` must be a function from the input to its key');
  }
  if (!name) {
    throw new IdempotencyConfigInvalidError(
      'makeIdempotent: give the function a `name` (it has none of its own): it keeps two functions’ keys apart',
    );
  }
  const results = (codec ?? JSON_CODEC) as ResultCodec<R>;
  // The engine answers refusals as responses; this formatter keeps the error itself beside each.
  const errors = new WeakMap<IdempotencyResponse, IdempotencyError>();
  const idem = createIdempotency({
    ...engineOptions,
    methods: ['POST'],
    required: true,
    scope: () => name,
    errorFormat: (error) => {
      // The message as the body: a stored error (a result not kept) is replayed from it.
      const response: IdempotencyResponse = {
        status: error.status,
        headers: [],
        body: new TextEncoder().encode(error.message),
      };
      errors.set(response, error);
      return response;
    },
  });
  const path = `/functions/${encodeURIComponent(name)}`;

  return async function idempotentCall(input: I): Promise<R> {
    const callKey = key(input);
    if (typeof callKey !== 'string') {
      throw new IdempotencyConfigInvalidError(
        `makeIdempotent(${name}): key() returned ${typeof callKey}, not a string`,
      );
    }
    const body = new TextEncoder().encode(JSON.stringify(fingerprint(input) ?? null));
    const request: IdempotencyRequest = {
      method: 'POST',
      url: path,
      header: (header) => (header === KEY_HEADER ? callKey : header === 'content-type' ? RESULT_TYPE : undefined),
      body: async () => body,
    };
    const decision = await idem.begin(request);
    if (decision.action === 'respond') return resultOf(decision.response);
    if (decision.action === 'pass') {
      // Only when the store failed and `onStoreError: 'fail-open'` says to run unprotected.
      return fn(input, unprotectedContext(engineOptions.store));
    }
    const execution = decision;
    let result: R;
    try {
      const running = Promise.resolve(fn(input, execution.context));
      execution.track(running);
      result = await running;
    } catch (error) {
      await execution.abort(error);
      throw error;
    }
    let encoded: Uint8Array | null;
    try {
      const value = results.encode(result);
      encoded = typeof value === 'string' ? new TextEncoder().encode(value) : value;
    } catch {
      // It ran: keep the key completed, without a result a retry could read.
      encoded = null;
    }
    const refused = await execution.commit({ status: 200, headers: [['content-type', RESULT_TYPE]], body: encoded });
    if (refused !== undefined) throw errorOf(refused);
    return result;
  };

  function resultOf(response: IdempotencyResponse): R {
    const error = errors.get(response);
    if (error !== undefined) throw error;
    // The one error the engine stores in place of a result: a run whose result was not kept.
    if (response.status === NOT_KEPT)
      throw new IdempotencyResponseNotKeptError(new TextDecoder().decode(response.body));
    return results.decode(response.body);
  }

  function errorOf(response: IdempotencyResponse): IdempotencyError {
    return (
      errors.get(response) ??
      new IdempotencyError(`makeIdempotent(${name}): the result was not kept (status ${response.status})`)
    );
  }
}
