/**
 * Prometheus metrics for an idempo engine (`idempo/metrics`), with prom-client, registered on a
 * registry of the caller's. They come from two places: the engine's events (outcomes, releases,
 * store errors, how long each request took) and a wrapper of the store that times each call
 * (store latency, keys in flight, how long a handler held its key, waits). Labels are bounded by
 * design: no key, no raw path, a route only where the framework gave a pattern.
 *
 * @module
 */
import { Gauge, register as globalRegistry, type Registry } from 'prom-client';
import type { IdempotencyEvent, IdempotencyObserver, IdempotencyRequest } from '../engine/types.js';
import type { ClaimInput, ClaimResult, FencedResult, IdempotencyStore } from '../vocabulary/index.js';
import { FastCounter, FastHistogram } from './prom-metrics.js';
import type { KeyUsage } from './usage.js';
import { resultOf, type StoreCall, watchedStore } from './watched-store.js';

/** Options of {@link idempoMetrics}. */
export interface IdempotencyMetricsOptions {
  /**
   * The prom-client registry the metrics are registered on.
   * @default prom-client's global `register`
   */
  registry?: Registry;
  /**
   * Prefix of every metric name.
   * @default 'idempo_'
   */
  prefix?: string;
  /**
   * The `store` label of store metrics: which store this engine uses (`redis`, `postgres`, …).
   * @default 'default'
   */
  storeName?: string;
  /**
   * Buckets of the request and handler duration histograms, in seconds.
   * @default [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]
   */
  durationBuckets?: readonly number[];
  /**
   * Buckets of the store operation latency histogram, in seconds.
   * @default [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]
   */
  storeBuckets?: readonly number[];
  /** A key usage tracker (`createKeyUsage` from `idempo/usage`) whose top scopes are exported too. */
  usage?: KeyUsage;
  /**
   * The `route` label of a request: a route pattern, never a raw path (its values must be few).
   * @default the pattern the adapter gives (`request.route`: Express, Fastify), else `''`
   */
  route?: (request: IdempotencyRequest) => string | undefined;
}

/** The observer {@link idempoMetrics} returns: pass it to `createIdempotency({ observe })`. */
export interface IdempotencyMetrics extends IdempotencyObserver {
  /** Keys claimed through this observer and not yet completed or released, whose lease has not passed. */
  keysInFlight(): number;
}

const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const STORE_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
/** Keys in flight tracked at most: past it the oldest are forgotten (a gauge that undercounts beats unbounded memory). */
const MAX_TRACKED_RUNS = 100_000;

/** Events after which the engine is done with a request (its duration is observed then). */
const FINAL: ReadonlySet<string> = new Set([
  'executed',
  'replayed',
  'conflict',
  'mismatch',
  'invalid_key',
  'released',
  'lease_lost',
  'outcome_unknown',
  'rate_limited',
]);
const FINAL_STORE_ACTIONS: ReadonlySet<string | undefined> = new Set(['fail-closed', 'fail-open', 'result_lost']);

/**
 * Prometheus metrics for an engine, in one line.
 *
 * @example
 * ```ts
 * import { Registry } from 'prom-client';
 * import { createIdempotency } from 'idempo';
 * import { idempoMetrics } from 'idempo/metrics';
 *
 * const registry = new Registry();
 * const idem = createIdempotency({ store, observe: idempoMetrics({ registry, storeName: 'redis' }) });
 * // serve `await registry.metrics()` with content type `registry.contentType`
 * ```
 */
export function idempoMetrics({
  registry = globalRegistry,
  prefix = 'idempo_',
  storeName = 'default',
  durationBuckets = DURATION_BUCKETS,
  storeBuckets = STORE_BUCKETS,
  usage,
  route: routeOf = (request) => request.route,
}: IdempotencyMetricsOptions = {}): IdempotencyMetrics {
  const registers = [registry];
  const counter = (name: string, help: string, labels: string[]) => {
    const metric = new FastCounter(name, help, labels);
    registry.registerMetric(metric as never);
    return metric;
  };
  const histogram = (name: string, help: string, labels: string[], buckets: readonly number[]) => {
    const metric = new FastHistogram(name, help, labels, buckets);
    registry.registerMetric(metric as never);
    return metric;
  };
  const outcomes = counter(
    `${prefix}outcomes_total`,
    'Outcomes of requests idempo handled, by event type (executed, replayed, conflict, mismatch, invalid_key, released, recovered, lease_lost, store_error, outcome_unknown, rate_limited).',
    ['type', 'route'],
  );
  const releases = counter(
    `${prefix}releases_total`,
    'Keys released so that a retry runs again, by reason: status (a status in releaseOn), threw, or client_gone (the client hung up before the handler started).',
    ['reason', 'route'],
  );
  const rateLimited = counter(
    `${prefix}rate_limited_total`,
    'Keyed requests refused 429 by a per-scope limit before their claim, by the limit that refused them: in_flight or new_keys.',
    ['limit', 'route'],
  );
  const storeErrors = counter(
    `${prefix}store_errors_total`,
    'Store failures the engine met, by the operation that failed and what the engine did (action).',
    ['operation', 'action'],
  );
  const requestDuration = histogram(
    `${prefix}request_duration_seconds`,
    'Time from the start of idempo handling a keyed request to its outcome, by outcome type; executed includes the handler.',
    ['type', 'route'],
    durationBuckets,
  );
  const handlerDuration = histogram(
    `${prefix}handler_duration_seconds`,
    'Time a run held its key, from the claim to its completion or release: the handler (or the upstream) and the response capture.',
    ['result', 'store'],
    durationBuckets,
  );
  const storeDuration = histogram(
    `${prefix}store_operation_duration_seconds`,
    'Latency of store operations, by operation and store.',
    ['operation', 'store'],
    storeBuckets,
  );
  const storeOperations = counter(
    `${prefix}store_operations_total`,
    'Store operations by result: a claim status (acquired, replay, in_flight, mismatch), ok, stale, or error.',
    ['operation', 'store', 'result'],
  );
  const waits = counter(
    `${prefix}waits_total`,
    "Duplicates that waited for the first request (concurrent: 'wait') and were answered, by the claim that ended the wait; a wait that timed out counts as a conflict outcome.",
    ['result', 'store'],
  );
  const waitDuration = histogram(
    `${prefix}wait_duration_seconds`,
    "How long duplicates waited for the first request (concurrent: 'wait') before they were answered.",
    ['store'],
    durationBuckets,
  );

  /** Runs this process claimed, by key and token: when each was claimed, and until when its lease holds. */
  const runs = new Map<string, { started: number; leaseMs: number; leaseUntil: number }>();
  const keysInFlight = (): number => {
    const now = performance.now();
    for (const [id, run] of runs) if (run.leaseUntil <= now) runs.delete(id);
    return runs.size;
  };
  new Gauge({
    name: `${prefix}keys_in_flight`,
    help: 'Keys this process claimed and has not completed or released yet, whose lease has not passed (handlers running, and keys kept for an unknown outcome).',
    labelNames: ['store'],
    registers,
    collect() {
      this.set({ store: storeName }, keysInFlight());
    },
  });
  if (usage) registerUsage(usage, prefix, registers);

  /** Claims that met another owner, and when the first of them did: the engine claims with the same object while it waits. */
  const waiting = new WeakMap<ClaimInput, number>();

  function watch(call: StoreCall) {
    const started = performance.now();
    const { operation } = call;
    if (operation === 'complete' || operation === 'release') {
      const id = `${call.key} ${call.token}`;
      const run = runs.get(id);
      if (run !== undefined) {
        runs.delete(id);
        const result = operation === 'complete' ? 'completed' : 'released';
        handlerDuration.observe(handlerDuration.series(result, [result, storeName]), (started - run.started) / 1_000);
      }
    }
    return (result: ClaimResult | FencedResult | undefined, error?: unknown) => {
      const ended = performance.now();
      storeDuration.observe(storeDuration.series(operation, [operation, storeName]), (ended - started) / 1_000);
      const outcome = resultOf(result, error);
      storeOperations.series(`${operation} ${outcome}`, [operation, storeName, outcome]).value++;
      if (operation === 'claim' && call.claim !== undefined) {
        const input = call.claim;
        if (outcome === 'in_flight') {
          if (!waiting.has(input)) waiting.set(input, ended);
        } else {
          const since = waiting.get(input);
          if (since !== undefined) {
            waiting.delete(input);
            waits.series(outcome, [outcome, storeName]).value++;
            waitDuration.observe(waitDuration.series('', [storeName]), (ended - since) / 1_000);
          }
        }
        if (outcome === 'acquired' && typeof result === 'object' && result.status === 'acquired') {
          if (runs.size >= MAX_TRACKED_RUNS) runs.delete(runs.keys().next().value as string);
          runs.set(`${input.key} ${result.token}`, {
            started: ended,
            leaseMs: input.leaseMs,
            leaseUntil: ended + input.leaseMs,
          });
        }
      } else if (operation === 'renew' && outcome === 'ok') {
        const run = runs.get(`${call.key} ${call.token}`);
        if (run !== undefined) run.leaseUntil = ended + run.leaseMs;
      }
    };
  }

  return {
    keysInFlight,
    wrapStore(store: IdempotencyStore): IdempotencyStore {
      return watchedStore(store, watch);
    },
    onEvent(event: IdempotencyEvent, request: IdempotencyRequest): void {
      const { type } = event;
      const route = routeOf(request) ?? '';
      const key = route === '' ? type : `${type} ${route}`;
      outcomes.series(key, [type, route]).value++;
      if (type === 'released') {
        const reason = event.reason ?? '';
        releases.series(`${reason} ${route}`, [reason, route]).value++;
      } else if (type === 'rate_limited') {
        const limit = event.reason ?? '';
        rateLimited.series(`${limit} ${route}`, [limit, route]).value++;
      } else if (type === 'store_error') {
        const operation = event.reason ?? '';
        const action = event.action ?? '';
        storeErrors.series(`${operation} ${action}`, [operation, action]).value++;
      }
      if (FINAL.has(type) || (type === 'store_error' && FINAL_STORE_ACTIONS.has(event.action))) {
        requestDuration.observe(requestDuration.series(key, [type, route]), event.durationMs / 1_000);
      }
    },
  };
}

/**
 * Key usage as gauges: for each counter, the top scopes by name and the rest summed as
 * `scope="other"`, so the series stay bounded whatever the number of scopes.
 */
function registerUsage(usage: KeyUsage, prefix: string, registers: Registry[]): void {
  new Gauge({
    name: `${prefix}scope_events`,
    help: `Key usage per scope over the last ${usage.windowMs / 1_000} s, by counter (new_keys, replays, conflicts, mismatches): the top ${usage.topN} scopes of each counter by name, the others summed as scope="other".`,
    labelNames: ['counter', 'scope'],
    registers,
    collect() {
      this.reset();
      for (const counter of usage.counters) {
        const { top, other } = usage.top(counter, usage.topN);
        for (const { scope, count } of top) this.set({ counter, scope }, count);
        this.set({ counter, scope: 'other' }, other);
      }
    },
  });
  new Gauge({
    name: `${prefix}scopes_tracked`,
    help: 'Scopes the key usage tracker holds now (at most its maxScopes).',
    registers,
    collect() {
      this.set(usage.size());
    },
  });
}
