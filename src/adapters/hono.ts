/**
 * The Hono adapter (`idempo/hono`): a middleware that puts the routes after it under the
 * idempotency protocol. Hono speaks web-standard `Request`/`Response` on every runtime, so this
 * adapter works on those directly (`c.req.raw`, `c.res`) and imports nothing from Node but what the
 * engine itself needs (`node:crypto`, which Bun, Deno and Workers with `nodejs_compat` provide).
 *
 * @module
 */
import type { Context, MiddlewareHandler } from 'hono';
import { CLIENT_GONE, tooLarge } from '../engine/error-responses.js';
import type { Execution, IdempotencyContext, IdempotencyRequest } from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import { concatBytes, fromWebRequest, headerPairs, toWebResponse } from '../engine/web.js';
import { type EngineOrOptions, engineOf } from './engine-of.js';

declare module 'hono' {
  interface ContextVariableMap {
    /**
     * The idempotency context of this request, set by `idempotency()`: the real one when idempo
     * protects the request, otherwise one whose `step()` simply runs (method not covered, no key,
     * fail-open).
     */
    idempotency: IdempotencyContext;
  }
}

/** The Hono `Env` the middleware sets: `c.get('idempotency')` / `c.var.idempotency`. */
export interface IdempotencyEnv {
  Variables: { idempotency: IdempotencyContext };
}

/**
 * Options of {@link idempotency}: the engine's options, or an engine made with
 * `createIdempotency()` to share one engine (and its store) between several apps.
 */
export type HonoIdempotencyOptions = EngineOrOptions;

const UNPROTECTED = unprotectedContext();

/**
 * Hono middleware for the idempotency protocol. It reads the body (at most `maxBodyBytes`) to
 * fingerprint it and gives the route a fresh `c.req.raw` carrying the same bytes, so `c.req.json()`,
 * validators and `c.req.raw` all still work; mounted after a validator that already read the body,
 * it uses Hono's cached copy. The route's response is buffered up to `maxResponseBytes` and stored
 * before it is returned; a larger one streams on unstored and releases the key. An error a route
 * throws releases the key, and your `onError` answers it as usual.
 *
 * @example
 * ```ts
 * import { Hono } from 'hono';
 * import { createMemoryStore } from 'idempo/memory';
 * import { idempotency } from 'idempo/hono';
 *
 * const app = new Hono();
 * app.use('/payments/*', idempotency({ store: createMemoryStore() }));
 * app.post('/payments', async (c) => {
 *   const charge = await c.var.idempotency.step('charge', async () => chargeCard(await c.req.json()));
 *   return c.json(charge, 201);
 * });
 * ```
 */
export function idempotency(options: HonoIdempotencyOptions): MiddlewareHandler<IdempotencyEnv> {
  const idem = engineOf(options);
  const maxResponseBytes = idem.limits.maxResponseBytes;
  return async function idempotencyMiddleware(c, next) {
    const decision = await idem.begin(honoRequest(c));
    if (decision.action === 'respond') return toWebResponse(decision.response);
    if (decision.action === 'pass') {
      c.set('idempotency', UNPROTECTED);
      await next();
      return;
    }
    if (c.req.raw.signal.aborted) {
      // The client hung up while the key was being claimed: nothing has run, so the key is free again.
      await decision.abort(CLIENT_GONE);
      return new Response(null, { status: 499 });
    }
    c.set('idempotency', decision.context);
    try {
      await next();
    } catch (error) {
      await decision.abort(error);
      throw error;
    }
    // Hono hands a route's error to onError inside next(): the error response is already in c.res.
    if (c.error !== undefined) {
      await decision.abort(c.error);
      return;
    }
    c.res = await stored(c.res, decision, maxResponseBytes);
  };
}

function honoRequest(c: Context): IdempotencyRequest {
  const neutral = fromWebRequest(c.req.raw);
  return {
    method: neutral.method,
    url: neutral.url,
    header: neutral.header,
    async body(maxBytes) {
      const raw = c.req.raw;
      if (raw.bodyUsed) {
        // Read before idempo through c.req (a validator): Hono keeps a copy.
        const cached = new Uint8Array(await c.req.arrayBuffer());
        if (cached.byteLength > maxBytes) throw tooLarge(maxBytes);
        return cached.byteLength === 0 ? null : cached;
      }
      const bytes = await neutral.body(maxBytes);
      if (bytes !== null) c.req.raw = withBody(raw, bytes as Uint8Array);
      return bytes;
    },
  };
}

/**
 * The same request with the body idempo read. Built from its parts rather than `new Request(raw,
 * …)`: some servers' request objects (@hono/node-server's, without its global override) are not
 * brand-checked Requests.
 */
function withBody(raw: Request, body: Uint8Array): Request {
  return new Request(raw.url, {
    method: raw.method,
    headers: raw.headers,
    body: body as Uint8Array<ArrayBuffer>,
    signal: raw.signal,
  });
}

/**
 * Reads the route's response, at most `maxBytes`, reports it to the engine and returns a response
 * with the same status, headers and bytes. Past `maxBytes` it stops buffering: the key is kept
 * completed without the body (a retry gets `410`) and the response streams on from where the
 * reading stopped.
 */
async function stored(response: Response, execution: Execution, maxBytes: number): Promise<Response> {
  const status = response.status;
  const headers = headerPairs(response.headers);
  if (response.body === null) {
    await execution.commit({ status, headers, body: new Uint8Array() });
    return response;
  }
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.byteLength;
      if (size > maxBytes) {
        const instead = await execution.commit({ status, headers, body: null });
        if (instead) {
          await reader.cancel();
          return toWebResponse(instead);
        }
        return new Response(resumed(chunks, reader), response);
      }
    }
  } catch (error) {
    await execution.abort(error);
    throw error;
  }
  const body = concatBytes(chunks, size);
  const instead = await execution.commit({ status, headers, body });
  if (instead) return toWebResponse(instead);
  return new Response(body as Uint8Array<ArrayBuffer>, {
    status,
    statusText: response.statusText,
    headers: response.headers,
  });
}

/** A stream of the chunks already read, then the rest of `reader`. */
function resumed(chunks: Uint8Array[], reader: ReadableStreamDefaultReader<Uint8Array>): ReadableStream<Uint8Array> {
  return new ReadableStream({
    async pull(controller) {
      const next = chunks.shift();
      if (next !== undefined) {
        controller.enqueue(next);
        return;
      }
      const { done, value } = await reader.read();
      if (done) controller.close();
      else controller.enqueue(value);
    },
    cancel: (reason) => reader.cancel(reason),
  });
}
