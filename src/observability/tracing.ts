/**
 * OpenTelemetry traces for an idempo engine (`idempo/tracing`), through `@opentelemetry/api`:
 * one `idempo.request` span per keyed request, child of the span active when the adapter called
 * the engine (the server span of your HTTP instrumentation), with the outcome, whether it was a
 * replay or a recovery, and the hashed store key (never the raw key); and one child span per store
 * call it made. Without a registered tracer provider the API's tracer makes no-op spans.
 *
 * @module
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type Attributes,
  type Context,
  context,
  propagation,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type Tracer,
  trace,
} from '@opentelemetry/api';
import type {
  Decision,
  Execution,
  IdempotencyContext,
  IdempotencyEvent,
  IdempotencyObserver,
  IdempotencyRequest,
} from '../engine/types.js';
import type { ClaimResult, FencedResult, IdempotencyStore } from '../vocabulary/index.js';
import { resultOf, type StoreCall, watchedStore } from './watched-store.js';

/** Options of {@link idempoTracing}. */
export interface IdempotencyTracingOptions {
  /**
   * The tracer spans are made with.
   * @default trace.getTracer('idempo')
   */
  tracer?: Tracer;
  /**
   * The `http.route` attribute of a request span: a route pattern, never a raw path.
   * @default the pattern the adapter gives (`request.route`: Express, Fastify)
   */
  route?: (request: IdempotencyRequest) => string | undefined;
}

/** The observer {@link idempoTracing} returns, plus what a proxy needs to carry the trace on. */
export interface IdempotencyTracing extends IdempotencyObserver {
  /**
   * Writes the trace context of the `idempo.request` span of the run `ctx` belongs to into
   * `carrier` (a `traceparent` header, and what else the registered propagator writes), so the
   * work it calls joins the trace. Writes nothing for a run it has no span of.
   */
  inject(ctx: IdempotencyContext, carrier: Record<string, string>): void;
}

/** One keyed request: its span, made at its first store call, and the context it is made in. */
interface Traced {
  readonly parent: Context;
  readonly startTime: number;
  readonly request: IdempotencyRequest;
  span: Span | undefined;
  /** The context with `span` in it: the parent of its store calls' spans. */
  within: Context | undefined;
  ended: boolean;
}

/** The span names and attributes, in one place for docs/operations.md. */
export const SPAN_REQUEST = 'idempo.request';
const ATTR = {
  outcome: 'idempo.outcome',
  replayed: 'idempo.replayed',
  recovered: 'idempo.recovered',
  keyHash: 'idempo.key_hash',
  reason: 'idempo.reason',
  action: 'idempo.store_error.action',
  operation: 'idempo.store.operation',
  result: 'idempo.store.result',
  token: 'idempo.fencing_token',
  method: 'http.request.method',
  route: 'http.route',
  status: 'http.response.status_code',
} as const;

/**
 * Traces for an engine, in one line.
 *
 * @example
 * ```ts
 * import { createIdempotency } from 'idempo';
 * import { idempoTracing } from 'idempo/tracing';
 *
 * // With an OpenTelemetry SDK registered (NodeSDK, or a NodeTracerProvider):
 * const idem = createIdempotency({ store, observe: idempoTracing() });
 * ```
 */
export function idempoTracing({
  tracer = trace.getTracer('idempo'),
  route: routeOf = (request) => request.route,
}: IdempotencyTracingOptions = {}): IdempotencyTracing {
  /** The request whose `begin` is running, for the claim (and waits) it makes. */
  const current = new AsyncLocalStorage<Traced>();
  const byRequest = new WeakMap<IdempotencyRequest, Traced>();
  /** Runs by store key and token: their writes after the claim (complete, renew, …) come from timers and callbacks. */
  const runs = new Map<string, Traced>();

  function spanOf(traced: Traced, key: string): Span {
    if (traced.span === undefined) {
      const attributes: Attributes = { [ATTR.method]: traced.request.method, [ATTR.keyHash]: key };
      const route = routeOf(traced.request);
      if (route !== undefined) attributes[ATTR.route] = route;
      traced.span = tracer.startSpan(
        SPAN_REQUEST,
        { kind: SpanKind.INTERNAL, startTime: traced.startTime, attributes },
        traced.parent,
      );
    }
    return traced.span;
  }

  function end(traced: Traced): void {
    if (traced.ended) return;
    traced.ended = true;
    traced.span?.end();
  }

  function watch(call: StoreCall) {
    const traced = call.token === undefined ? current.getStore() : runs.get(`${call.key} ${call.token}`);
    if (traced === undefined || traced.ended) return ignore;
    const request = spanOf(traced, call.key);
    // Sampled out, or no SDK: children would record nothing either.
    if (!request.isRecording()) return ignore;
    traced.within ??= trace.setSpan(traced.parent, request);
    const parent = traced.within;
    const attributes: Attributes = { [ATTR.operation]: call.operation };
    if (call.token !== undefined) attributes[ATTR.token] = call.token;
    const span = tracer.startSpan(`idempo.store.${call.operation}`, { kind: SpanKind.CLIENT, attributes }, parent);
    return (result: ClaimResult | FencedResult | undefined, error?: unknown) => {
      span.setAttribute(ATTR.result, resultOf(result, error));
      if (error !== undefined) {
        span.recordException(error instanceof Error ? error : String(error));
        span.setStatus({ code: SpanStatusCode.ERROR });
      } else if (typeof result === 'object' && result.status === 'acquired') {
        // A run an adapter never settles must not hold memory for ever: the oldest go first.
        if (runs.size >= MAX_RUNS) runs.delete(runs.keys().next().value as string);
        runs.set(`${call.key} ${result.token}`, traced);
      }
      span.end();
    };
  }

  function settle(traced: Traced, key: string, token: number) {
    return () => {
      runs.delete(`${key} ${token}`);
      end(traced);
    };
  }

  /** The execution as the engine made it, with its span ended when it settles. */
  function tracedExecution(execution: Execution, traced: Traced): Execution {
    const done = settle(traced, execution.context.storeKey, execution.context.token);
    return {
      action: 'execute',
      body: execution.body,
      context: execution.context,
      commit: (response) => execution.commit(response).finally(done),
      commitNow(response) {
        const outcome = execution.commitNow(response);
        if (outcome instanceof Promise) return outcome.finally(done);
        done();
        return outcome;
      },
      abort: (error) => execution.abort(error).finally(done),
      clientGone: () => execution.clientGone(),
      track: (work) => execution.track(work),
    };
  }

  return {
    wrapStore(store: IdempotencyStore): IdempotencyStore {
      return watchedStore(store, watch);
    },
    wrapBegin(begin) {
      return function tracedBegin(request: IdempotencyRequest): Promise<Decision> {
        const active = context.active();
        const traced: Traced = {
          // Under a server span (HTTP instrumentation) it is the parent; without one, the trace the client sent.
          parent: trace.getSpan(active) === undefined ? propagation.extract(active, request, HEADERS) : active,
          startTime: Date.now(),
          request,
          span: undefined,
          within: undefined,
          ended: false,
        };
        byRequest.set(request, traced);
        return current
          .run(traced, () => begin(request))
          .then(
            (decision) => {
              if (decision.action === 'execute' && traced.span !== undefined) return tracedExecution(decision, traced);
              if (decision.action === 'respond') traced.span?.setAttribute(ATTR.status, decision.response.status);
              end(traced);
              return decision;
            },
            (error: unknown) => {
              traced.span?.recordException(error instanceof Error ? error : String(error));
              traced.span?.setStatus({ code: SpanStatusCode.ERROR });
              end(traced);
              throw error;
            },
          );
      };
    },
    onEvent(event: IdempotencyEvent, request: IdempotencyRequest): void {
      const traced = byRequest.get(request);
      const span = traced?.span;
      if (span === undefined || traced?.ended || !span.isRecording()) return;
      const { type } = event;
      if (type === 'recovered') {
        span.setAttribute(ATTR.recovered, true);
        return;
      }
      if (
        type === 'store_error' &&
        event.action !== 'fail-closed' &&
        event.action !== 'fail-open' &&
        event.action !== 'result_lost'
      ) {
        // A retried completion or a failed renewal: worth seeing on the span, not its outcome.
        span.addEvent('idempo.store_error', { [ATTR.reason]: event.reason ?? '', [ATTR.action]: event.action ?? '' });
        return;
      }
      span.setAttribute(ATTR.outcome, type);
      span.setAttribute(ATTR.replayed, type === 'replayed');
      if (event.status !== undefined) span.setAttribute(ATTR.status, event.status);
      if (event.reason !== undefined) span.setAttribute(ATTR.reason, event.reason);
      if (type === 'store_error') {
        span.setAttribute(ATTR.action, event.action ?? '');
        span.setStatus({ code: SpanStatusCode.ERROR, message: `store ${event.reason ?? ''} failed` });
      }
    },
    inject(ctx: IdempotencyContext, carrier: Record<string, string>): void {
      const traced = runs.get(`${ctx.storeKey} ${ctx.token}`);
      if (traced?.span === undefined) return;
      propagation.inject(trace.setSpan(traced.parent, traced.span), carrier);
    },
  };
}

const ignore = (): void => {};

/** Runs whose spans are tracked at most. */
const MAX_RUNS = 100_000;

/** Reads a trace context from a request's headers. */
const HEADERS: TextMapGetter<IdempotencyRequest> = {
  get: (request, name) => request.header(name),
  keys: () => [],
};
