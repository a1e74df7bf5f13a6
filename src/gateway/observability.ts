/**
 * What the gateway observes and serves on its admin listener: Prometheus metrics at
 * `GET /metrics` (prom-client, loaded only when `--admin-port` is given), key usage per scope at
 * `GET /usage`, and OpenTelemetry traces when an SDK is registered in the process (the
 * `@opentelemetry/api` package, loaded only to look). Each is an observer of the engine.
 *
 * @module
 */
import type { Logger } from 'pino';
import { pathOf } from '../engine/path.js';
import type { IdempotencyContext, IdempotencyObserver, IdempotencyRequest } from '../engine/types.js';
import { createKeyUsage, type KeyUsageOptions, type UsageCounter } from '../observability/usage.js';
import { IdempotencyDependencyMissingError } from '../vocabulary/index.js';
import { type AdminRoute, sendJson } from './admin.js';
import { compilePathPatterns } from './path-patterns.js';

/** Key usage settings of the gateway (`usage` in a config file). */
export type GatewayUsageOptions = Pick<KeyUsageOptions, 'window' | 'maxScopes' | 'topN' | 'thresholds'>;

/** What {@link gatewayObservability} sets up. */
export interface GatewayObservability {
  readonly observers: IdempotencyObserver[];
  /** The admin listener's routes (none without `--admin-port`). */
  readonly routes: AdminRoute[];
  /** Writes the trace context of a keyed request's span into the headers sent upstream, when tracing. */
  readonly traceHeaders: ((context: IdempotencyContext, headers: Record<string, string>) => void) | undefined;
  readonly tracing: boolean;
}

/** Usage thresholds the gateway logs at unless told otherwise: a scope this far over is worth a look. */
const USAGE_THRESHOLDS: Partial<Record<UsageCounter, number>> = { mismatches: 20, invalid_keys: 50 };

/** Sets up metrics, key usage and tracing for a gateway. */
export async function gatewayObservability({
  admin,
  storeName,
  scopeHeader,
  usage: usageOptions = {},
  routes: patterns = [],
  logger,
}: {
  admin: boolean;
  /** Path patterns whose match labels a request's route (`--require-key`'s): the first that matches. */
  routes?: readonly string[];
  storeName: string;
  scopeHeader: string | undefined;
  usage?: GatewayUsageOptions | undefined;
  logger: Logger | undefined;
}): Promise<GatewayObservability> {
  const observers: IdempotencyObserver[] = [];
  const routes: AdminRoute[] = [];
  const route = routeOfPatterns(patterns);
  if (admin) {
    const { promClient, metrics } = await loadMetrics();
    const registry = new promClient.Registry();
    promClient.collectDefaultMetrics({ register: registry });
    const usage = createKeyUsage({
      ...usageOptions,
      thresholds: usageOptions.thresholds ?? USAGE_THRESHOLDS,
      // The tenant when the gateway scopes keys by a header, otherwise the client's address.
      scope: (request: IdempotencyRequest) =>
        (scopeHeader === undefined ? undefined : request.header(scopeHeader)) ?? request.remoteAddress,
      onThreshold: (event) =>
        logger?.warn(
          { scope: event.scope, counter: event.counter, count: event.count, windowMs: event.windowMs },
          `idempo key usage: ${event.scope} reached ${event.count} ${event.counter} within ${event.windowMs / 1_000} s`,
        ),
    });
    observers.push(metrics.idempoMetrics({ registry, storeName, usage, route }), usage);
    routes.push(
      {
        method: 'GET',
        path: '/metrics',
        description: 'Prometheus metrics',
        handle: async (_req, res) => {
          const body = await registry.metrics();
          res.writeHead(200, { 'content-type': registry.contentType, 'cache-control': 'no-store' });
          res.end(body);
        },
      },
      {
        method: 'GET',
        path: '/usage',
        description: 'key usage: the top scopes of each counter over the window (?n=10, ?counter=mismatches)',
        handle: (_req, res, url) => {
          const n = Math.min(1_000, Math.max(1, Number(url.searchParams.get('n')) || usage.topN));
          const asked = url.searchParams.get('counter');
          if (asked !== null && !usage.counters.includes(asked as UsageCounter)) {
            sendJson(res, 400, { error: `counter: expected one of ${usage.counters.join(', ')}` });
            return;
          }
          const counters = asked === null ? usage.counters : [asked as UsageCounter];
          sendJson(res, 200, {
            windowMs: usage.windowMs,
            scopes: usage.size(),
            counters: Object.fromEntries(counters.map((counter) => [counter, usage.top(counter, n)])),
          });
        },
      },
    );
  }
  const tracing = await loadTracing(route);
  if (tracing) observers.push(tracing);
  return {
    observers,
    routes,
    traceHeaders: tracing ? (context, headers) => tracing.inject(context, headers) : undefined,
    tracing: tracing !== undefined,
  };
}

async function loadMetrics() {
  try {
    const promClient = await import('prom-client');
    const metrics = await import('../observability/metrics.js');
    return { promClient, metrics };
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ERR_MODULE_NOT_FOUND') throw error;
    throw new IdempotencyDependencyMissingError(
      '--admin-port serves Prometheus metrics with prom-client, which is not installed (an install with --omit=optional leaves it out): npm install prom-client',
      { cause: error },
    );
  }
}

/**
 * The tracing observer, when an OpenTelemetry SDK is registered in this process (with
 * `node --import` of a setup file, or an auto-instrumentation's register hook); otherwise
 * nothing, and no request pays for tracing.
 */
async function loadTracing(route: (request: IdempotencyRequest) => string | undefined) {
  let api: typeof import('@opentelemetry/api');
  try {
    api = await import('@opentelemetry/api');
  } catch {
    return undefined;
  }
  // The API's own tracer, without an SDK, makes spans with an invalid context.
  const probe = api.trace.getTracer('idempo').startSpan('idempo.probe');
  if (!api.isSpanContextValid(probe.spanContext())) return undefined;
  const { idempoTracing } = await import('../observability/tracing.js');
  return idempoTracing({ route });
}

/** The first of `patterns` a request's path matches, as its route: the gateway knows no other routes. */
function routeOfPatterns(patterns: readonly string[]): (request: IdempotencyRequest) => string | undefined {
  const compiled = patterns.map((pattern) => ({ pattern, matches: compilePathPatterns([pattern]) }));
  return (request) => {
    if (compiled.length === 0) return undefined;
    const path = pathOf(request.url);
    return compiled.find(({ matches }) => matches(path))?.pattern;
  };
}
