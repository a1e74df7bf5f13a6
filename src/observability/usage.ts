/**
 * Key usage per scope (`idempo/usage`): how many new keys, replays, conflicts, mismatches and
 * invalid keys each tenant, principal or client address caused over a sliding window, the top
 * scopes of each, and an event when a scope crosses a threshold. Memory is bounded: at most
 * `maxScopes` scopes are tracked, the least recently active forgotten first.
 *
 * @module
 */
import type {
  IdempotencyEvent,
  IdempotencyEventType,
  IdempotencyObserver,
  IdempotencyRequest,
} from '../engine/types.js';
import { type Duration, IdempotencyConfigInvalidError, parseDuration } from '../vocabulary/index.js';

/** What key usage counts per scope. */
export type UsageCounter = 'new_keys' | 'replays' | 'conflicts' | 'mismatches' | 'invalid_keys';

const COUNTERS: readonly UsageCounter[] = ['new_keys', 'replays', 'conflicts', 'mismatches', 'invalid_keys'];

/** The counter each event type adds to: a run (whatever its end), a replay, a conflict, a mismatch, an invalid key. */
const COUNTER_OF: Partial<Record<IdempotencyEventType, number>> = {
  executed: 0,
  released: 0,
  outcome_unknown: 0,
  lease_lost: 0,
  replayed: 1,
  conflict: 2,
  mismatch: 3,
  invalid_key: 4,
};

/** Told when a scope's count over the window reaches a threshold. */
export interface UsageThresholdEvent {
  scope: string;
  counter: UsageCounter;
  /** The count over the window, equal to the threshold. */
  count: number;
  threshold: number;
  windowMs: number;
}

/** Options of {@link createKeyUsage}. */
export interface KeyUsageOptions {
  /**
   * Who a request is counted for: a tenant, a principal, an API key's id. Use the same function as
   * the engine's `scope` option, if you set one.
   * @default the client's address, where the adapter knows it (otherwise `'unknown'`)
   */
  scope?: (request: IdempotencyRequest) => string | undefined;
  /**
   * The sliding window counts cover.
   * @default '5m'
   */
  window?: Duration;
  /**
   * Most scopes tracked at once; past it the least recently active one is forgotten.
   * @default 10000
   */
  maxScopes?: number;
  /**
   * How many scopes of each counter `idempoMetrics({ usage })` exports by name (the rest as `other`).
   * @default 10
   */
  topN?: number;
  /**
   * Counts per window at which `onThreshold` is told, per counter, e.g. `{ mismatches: 20 }`.
   * @default {}
   */
  thresholds?: Partial<Record<UsageCounter, number>>;
  /** Told each time a scope's count reaches its counter's threshold (again after it fell below). Must not throw. */
  onThreshold?: (event: UsageThresholdEvent) => void;
}

/** One scope's counts over the window. */
export type UsageCounts = Record<UsageCounter, number>;

/** A key usage tracker: an observer for `createIdempotency({ observe })`, and its queries. */
export interface KeyUsage extends IdempotencyObserver {
  /** The counters, in a fixed order. */
  readonly counters: readonly UsageCounter[];
  readonly windowMs: number;
  readonly topN: number;
  /** The `n` scopes with the highest count of `counter` over the window (highest first, none at zero), and the sum of all others. */
  top(counter: UsageCounter, n?: number): { top: { scope: string; count: number }[]; other: number };
  /** One scope's counts over the window; all zero for a scope not tracked. */
  counts(scope: string): UsageCounts;
  /** How many scopes are tracked now. */
  size(): number;
  /** Counts one event for a scope, as the observer does for each engine event. */
  record(scope: string, type: IdempotencyEventType, now?: number): void;
}

/** Buckets the window is cut into: counts slide by a sixth of the window. */
const BUCKETS = 6;

interface ScopeCounts {
  /** The bucket number (time / bucket length) each slot holds. */
  epochs: Float64Array;
  /** Counts by counter and slot: `counts[counter * BUCKETS + slot]`. */
  counts: Uint32Array;
}

/**
 * Tracks key usage per scope over a sliding window.
 *
 * @example
 * ```ts
 * import { createKeyUsage } from 'idempo/usage';
 *
 * const usage = createKeyUsage({
 *   scope: (request) => request.header('x-tenant-id'),
 *   thresholds: { mismatches: 20 },
 *   onThreshold: (event) => console.warn(`${event.scope}: ${event.count} ${event.counter} in 5 minutes`),
 * });
 * const idem = createIdempotency({ store, observe: usage });
 * usage.top('mismatches', 5);
 * ```
 */
export function createKeyUsage({
  scope = (request) => request.remoteAddress,
  window = '5m',
  maxScopes = 10_000,
  topN = 10,
  thresholds = {},
  onThreshold,
}: KeyUsageOptions = {}): KeyUsage {
  const windowMs = parseDuration(window, 'window');
  if (!Number.isSafeInteger(maxScopes) || maxScopes <= 0)
    throw new IdempotencyConfigInvalidError(`maxScopes: expected a positive integer, got ${maxScopes}`);
  if (!Number.isSafeInteger(topN) || topN < 0)
    throw new IdempotencyConfigInvalidError(`topN: expected a non-negative integer, got ${topN}`);
  const bucketMs = Math.max(1, windowMs / BUCKETS);
  const limits = COUNTERS.map((counter) => thresholds[counter] ?? 0);
  /** Insertion order is recency: a scope is moved to the end when it is counted, and the first one is forgotten. */
  const scopes = new Map<string, ScopeCounts>();

  function countOf(entry: ScopeCounts, counter: number, bucket: number): number {
    let sum = 0;
    for (let slot = 0; slot < BUCKETS; slot++) {
      if ((entry.epochs[slot] as number) > bucket - BUCKETS) sum += entry.counts[counter * BUCKETS + slot] as number;
    }
    return sum;
  }

  function record(name: string, type: IdempotencyEventType, now = Date.now()): void {
    const counter = COUNTER_OF[type];
    if (counter === undefined) return;
    let entry = scopes.get(name);
    if (entry === undefined) {
      if (scopes.size >= maxScopes) scopes.delete(scopes.keys().next().value as string);
      entry = { epochs: new Float64Array(BUCKETS).fill(-1), counts: new Uint32Array(BUCKETS * COUNTERS.length) };
    } else {
      scopes.delete(name);
    }
    scopes.set(name, entry);
    const bucket = Math.floor(now / bucketMs);
    const slot = bucket % BUCKETS;
    if (entry.epochs[slot] !== bucket) {
      entry.epochs[slot] = bucket;
      for (let c = 0; c < COUNTERS.length; c++) entry.counts[c * BUCKETS + slot] = 0;
    }
    entry.counts[counter * BUCKETS + slot] = (entry.counts[counter * BUCKETS + slot] as number) + 1;
    const threshold = limits[counter] as number;
    if (threshold > 0 && onThreshold) {
      const count = countOf(entry, counter, bucket);
      // Counts rise one at a time: equal means this event crossed it.
      if (count === threshold) {
        try {
          onThreshold({ scope: name, counter: COUNTERS[counter] as UsageCounter, count, threshold, windowMs });
        } catch {}
      }
    }
  }

  return {
    counters: COUNTERS,
    windowMs,
    topN,
    record,
    onEvent(event: IdempotencyEvent, request: IdempotencyRequest): void {
      if (COUNTER_OF[event.type] === undefined) return;
      record(scope(request) ?? 'unknown', event.type);
    },
    top(counter: UsageCounter, n = topN) {
      const index = COUNTERS.indexOf(counter);
      if (index < 0) throw new IdempotencyConfigInvalidError(`top: unknown counter ${JSON.stringify(counter)}`);
      const bucket = Math.floor(Date.now() / bucketMs);
      const all: { scope: string; count: number }[] = [];
      for (const [name, entry] of scopes) {
        const count = countOf(entry, index, bucket);
        if (count > 0) all.push({ scope: name, count });
      }
      all.sort((a, b) => b.count - a.count || (a.scope < b.scope ? -1 : 1));
      const top = all.slice(0, n);
      let other = 0;
      for (let i = n; i < all.length; i++) other += (all[i] as { count: number }).count;
      return { top, other };
    },
    counts(name: string): UsageCounts {
      const entry = scopes.get(name);
      const bucket = Math.floor(Date.now() / bucketMs);
      const result = {} as UsageCounts;
      COUNTERS.forEach((counter, index) => {
        result[counter] = entry === undefined ? 0 : countOf(entry, index, bucket);
      });
      return result;
    },
    size: () => scopes.size,
  };
}
