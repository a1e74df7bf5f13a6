/**
 * The Koa adapter (`idempo/koa`): a middleware that puts the middleware after it under the
 * idempotency protocol. It translates Koa's context (node:http objects underneath) to the
 * engine's neutral shapes and back; Koa 2 and 3.
 *
 * @module
 */
import type { Middleware, Next, ParameterizedContext } from 'koa';
import type { IdempotencyContext, IdempotencyRequest, IdempotencyResponse } from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import { type EngineOrOptions, engineOf } from './engine-of.js';
import { capture } from './node.js';
import { bodyOf, headerOf } from './node-body.js';
import { asBuffer } from './node-response.js';

declare module 'koa' {
  interface DefaultState {
    /**
     * The idempotency context of this request, set by `idempotency()`: the real one when idempo
     * protects the request, otherwise one whose `step()` simply runs (method not covered, no key,
     * fail-open).
     */
    idempotency?: IdempotencyContext;
  }
}

/**
 * Options of {@link idempotency}: the engine's options, or an engine made with
 * `createIdempotency()` to share one engine (and its store) between several apps.
 */
export type KoaIdempotencyOptions = EngineOrOptions;

/**
 * Koa middleware for the idempotency protocol; `ctx.state.idempotency` holds the context. Mount
 * it before the middleware it protects, and before or after a body parser: before, it reads the
 * raw bytes and hands them back to the stream; after, it fingerprints `ctx.request.rawBody` (or
 * else the parsed `ctx.request.body`). What Koa writes for the response is captured as it goes
 * out (buffers, strings, JSON, streams) and its end waits until the response is stored. An error
 * thrown downstream releases the key and is rethrown to Koa's error handling.
 *
 * @example
 * ```ts
 * import Koa from 'koa';
 * import { createMemoryStore } from 'idempo/memory';
 * import { idempotency } from 'idempo/koa';
 *
 * const app = new Koa();
 * app.use(idempotency({ store: createMemoryStore() }));
 * app.use(async (ctx) => {
 *   ctx.status = 201;
 *   ctx.body = await ctx.state.idempotency!.step('order', () => createOrder());
 * });
 * ```
 */
export function idempotency(options: KoaIdempotencyOptions): Middleware {
  const idem = engineOf(options);
  const maxResponseBytes = idem.limits.maxResponseBytes;
  return async function idempotencyMiddleware(ctx: ParameterizedContext, next: Next): Promise<void> {
    // Mounted twice (app and router): the outer one already runs the protocol.
    if (ctx.state.idempotency !== undefined) return next();
    const decision = await idem.begin(koaRequest(ctx));
    if (decision.action === 'respond') {
      respond(ctx, decision.response);
      return;
    }
    if (decision.action === 'pass') {
      ctx.state.idempotency = unprotectedContext();
      return next();
    }
    if (!capture(ctx.res, decision, maxResponseBytes)) return;
    ctx.state.idempotency = decision.context;
    try {
      const work = next();
      // A client that hangs up does not stop the work: the lease is renewed while the handlers run.
      decision.track(work);
      await work;
      // Koa ends a response whose client left with no body (its respond() checks ctx.writable):
      // end it here with the body the handlers set, so the result stored for the retry is whole.
      if (!ctx.writable && !ctx.res.writableEnded && ctx.respond !== false) await endForStore(ctx);
    } catch (error) {
      await decision.abort(error);
      throw error;
    }
  };
}

/**
 * Ends a captured response the way Koa's respond() would have, for a client that is gone: what is
 * written goes to the capture only, to be stored for the retry.
 */
async function endForStore(ctx: ParameterizedContext): Promise<void> {
  const res = ctx.res;
  const body: unknown = ctx.body;
  if (body === null || body === undefined || Buffer.isBuffer(body) || typeof body === 'string') {
    res.end(body ?? undefined);
    return;
  }
  if (typeof (body as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') {
    for await (const chunk of body as AsyncIterable<Uint8Array | string>) res.write(chunk);
    res.end();
    return;
  }
  res.end(JSON.stringify(body));
}

/** The idempotency context of a request, or `undefined` when `idempotency()` did not see it. */
export function idempotencyContext(ctx: ParameterizedContext): IdempotencyContext | undefined {
  return ctx.state.idempotency;
}

function koaRequest(ctx: ParameterizedContext): IdempotencyRequest {
  const req = ctx.req;
  return {
    method: ctx.method,
    url: ctx.originalUrl,
    header: (name) => headerOf(req.headers, name),
    body: (maxBytes) =>
      bodyOf(
        req,
        maxBytes,
        () => {
          const request = ctx.request as { rawBody?: unknown; body?: unknown };
          return typeof request.rawBody === 'string' ? request.rawBody : request.body;
        },
        'ctx.request.body',
      ),
  };
}

/**
 * Sends a replay or an idempo error the Koa way, through `ctx`, so middleware around this one sees
 * it like any other response. Koa's body setter picks a type and length; the stored ones replace them.
 */
function respond(ctx: ParameterizedContext, response: IdempotencyResponse): void {
  ctx.body = asBuffer(response.body);
  ctx.status = response.status;
  ctx.remove('Content-Type');
  ctx.remove('Content-Length');
  const grouped = new Map<string, string[]>();
  for (const [name, value] of response.headers) {
    const values = grouped.get(name);
    if (values) values.push(value);
    else grouped.set(name, [value]);
  }
  for (const [name, values] of grouped) ctx.set(name, values.length === 1 ? (values[0] as string) : values);
}
