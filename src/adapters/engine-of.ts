import { createIdempotency } from '../engine/engine.js';
import type { Idempotency, IdempotencyOptions } from '../engine/types.js';

/**
 * What every adapter takes: the engine's options, or an engine made with `createIdempotency`, so
 * that several apps or routes share one engine (its store, its lease renewer).
 */
export type EngineOrOptions = IdempotencyOptions | { readonly idempotency: Idempotency };

/** The engine an adapter runs on: the one it was given, or one made from its options. */
export function engineOf(options: EngineOrOptions): Idempotency {
  return 'idempotency' in options ? options.idempotency : createIdempotency(options);
}
