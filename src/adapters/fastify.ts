/**
 * The Fastify adapter (`idempo/fastify`): a plugin that puts routes under the idempotency
 * protocol, all of them or those that opt in through their route config. It translates Fastify's
 * request and reply to the engine's neutral shapes and back; Fastify 4 and 5.
 *
 * @module
 */
import { Transform } from 'node:stream';
import type {
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
  onErrorHookHandler,
  preHandlerHookHandler,
  preParsingHookHandler,
  RouteOptions,
} from 'fastify';
import fp from 'fastify-plugin';
import { createIdempotency } from '../engine/engine.js';
import { tooLarge } from '../engine/error-responses.js';
import { isJsonContentType } from '../engine/fingerprint.js';
import type {
  Execution,
  Idempotency,
  IdempotencyContext,
  IdempotencyOptions,
  IdempotencyRequest,
  IdempotencyResponse,
  ParsedBody,
} from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';
import { type EngineOrOptions, engineOf } from './engine-of.js';
import { capture } from './node.js';
import { hasBody, headerOf } from './node-body.js';
import { asBuffer } from './node-response.js';

/**
 * What a route's `config.idempotency` says: `false` leaves the route alone, `true` protects it
 * with the plugin's engine, engine options protect it with an engine of its own (the plugin's
 * options with these on top, e.g. `{ methods: ['PUT'] }` or `{ required: true }`), and
 * `{ idempotency }` protects it with the given engine.
 */
export type FastifyRouteIdempotency = boolean | Partial<IdempotencyOptions> | { readonly idempotency: Idempotency };

/**
 * Options of the plugin: the engine's options, or `{ idempotency }` with an engine made by
 * `createIdempotency()`, plus `global`.
 */
export type FastifyIdempotencyOptions = EngineOrOptions & {
  /**
   * Protect every route registered after the plugin (opt out with `config: { idempotency: false }`),
   * or, when `false`, only the routes that opt in with `config: { idempotency: true }` (or options).
   * Either way only the engine's `methods` (default POST, PATCH) take part.
   * @default true
   */
  global?: boolean;
};

declare module 'fastify' {
  interface FastifyInstance {
    /** The plugin's idempotency engine. */
    idempotency: Idempotency;
  }
  interface FastifyRequest {
    /**
     * The idempotency context of this request: the real one when idempo protects it, otherwise
     * one whose `step()` simply runs (route opted out, method not covered, no key, fail-open).
     */
    readonly idempotency: IdempotencyContext;
  }
  interface FastifyContextConfig {
    /** Opts this route in or out of idempotency, or gives it its own options; see `FastifyRouteIdempotency`. */
    idempotency?: FastifyRouteIdempotency;
  }
}

interface RecordedBody {
  chunks: Buffer[];
  size: number;
  overflow: boolean;
}

const UNPROTECTED = unprotectedContext();
/** Marks a body Fastify's parser reads as JSON: the fingerprint takes the parsed value. */
const PARSED = Symbol('parsed JSON body');
/**
 * Per-request state, in slots declared on Fastify's Request with `decorateRequest(…, null)` so
 * every request has the same shape: a WeakMap entry per request cost more to make and collect.
 */
const BODY = Symbol('idempo.body');
const EXECUTION = Symbol('idempo.execution');
type Tracked = FastifyRequest & { [BODY]: RecordedBody | typeof PARSED | null; [EXECUTION]: Execution | null };

const plugin: FastifyPluginAsync<FastifyIdempotencyOptions> = async function idempotencyPlugin(fastify, options) {
  const base = engineOf(options);
  const global = options.global ?? true;
  fastify.decorate('idempotency', base);
  fastify.decorateRequest('idempotency', {
    getter(this: FastifyRequest) {
      return (this as Tracked)[EXECUTION]?.context ?? UNPROTECTED;
    },
  });
  // A second registration (another encapsulated context) shares the slots the first declared.
  if (!fastify.hasRequestDecorator(BODY)) fastify.decorateRequest(BODY, null);
  if (!fastify.hasRequestDecorator(EXECUTION)) fastify.decorateRequest(EXECUTION, null);

  const engineFor = (route: RouteOptions): Idempotency | undefined => {
    const setting = route.config?.idempotency;
    if (setting === false || (setting === undefined && !global)) return undefined;
    if (setting === true || setting === undefined) return base;
    if ('idempotency' in setting) return setting.idempotency;
    if ('idempotency' in options && setting.store === undefined) {
      throw new IdempotencyConfigInvalidError(
        `config.idempotency of ${String(route.method)} ${route.url} sets engine options, but the plugin was given a ready engine; add a store to those options or pass { idempotency: engine }.`,
      );
    }
    return createIdempotency({ ...(options as IdempotencyOptions), ...setting } as IdempotencyOptions);
  };

  fastify.addHook('onRoute', (route) => {
    const idem = engineFor(route);
    if (idem === undefined) return;
    route.preParsing = [recordBody(idem.limits.maxBodyBytes), ...hooks(route.preParsing)];
    route.preHandler = [runProtocol(idem), ...hooks(route.preHandler)];
    route.onError = [...hooks(route.onError), releaseOnError];
  });
};

/**
 * The Fastify plugin for the idempotency protocol. Register it before the routes it protects.
 * It fingerprints the raw body bytes, recorded as Fastify's own parser reads them (so every
 * content-type parser and `bodyLimit` works as before), and decides once the body is parsed and
 * validated, just before the route's handler: a request Fastify rejects never claims its key.
 * Replays and idempo's errors are sent through `reply`; the handler's response is captured as it
 * goes out (strings, buffers, serialized objects, streams) and its end waits until it is stored.
 * A thrown error releases the key.
 *
 * @example
 * ```ts
 * import Fastify from 'fastify';
 * import { createMemoryStore } from 'idempo/memory';
 * import idempotency from 'idempo/fastify';
 *
 * const app = Fastify();
 * await app.register(idempotency, { store: createMemoryStore() });
 * app.post('/payments', async (request, reply) => {
 *   const charge = await request.idempotency.step('charge', () => chargeCard(request.body));
 *   return reply.code(201).send(charge);
 * });
 * app.post('/webhooks', { config: { idempotency: false } }, async () => ({ ok: true }));
 * ```
 */
export const idempotency = fp(plugin, { fastify: '4.x || 5.x', name: 'idempo' });
export default idempotency;

function hooks<T>(value: T | T[] | undefined): T[] {
  if (value === undefined) return [];
  return Array.isArray(value) ? value : [value];
}

/**
 * Records what the fingerprint needs. A JSON body is fingerprinted from what Fastify's parser
 * makes of it (the engine canonicalises JSON, so raw bytes and the parsed value agree, as they
 * do for Express after `express.json()`): no copy of the stream at all. Any other body is teed
 * into a record of at most `maxBytes` as Fastify's parser reads the same bytes.
 */
function recordBody(maxBytes: number): preParsingHookHandler {
  return function idempotencyRecordBody(request, reply, payload, done) {
    if (!hasBody(request.raw)) return done(null, payload);
    if (isJsonContentType(request.headers['content-type'])) {
      (request as Tracked)[BODY] = PARSED;
      return done(null, payload);
    }
    const record: RecordedBody = { chunks: [], size: 0, overflow: false };
    (request as Tracked)[BODY] = record;
    const tee = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        if (!record.overflow) {
          record.size += chunk.length;
          if (record.size > maxBytes) {
            record.overflow = true;
            record.chunks = [];
          } else {
            record.chunks.push(chunk);
          }
        }
        callback(null, chunk);
      },
    });
    // Fastify checks Content-Length against this when an earlier hook decoded the body.
    const source = payload as typeof payload & { receivedEncodedLength?: number };
    if (source.receivedEncodedLength !== undefined) {
      Object.defineProperty(tee, 'receivedEncodedLength', { get: () => source.receivedEncodedLength });
    }
    // pipe(), not pipeline(): on Node 20 pipeline() builds an AbortController and, when it
    // finishes, a DOMException with a stack: far more CPU per request than the rest of the adapter.
    payload.on('error', (error) => tee.destroy(error));
    payload.pipe(tee);
    // Fastify may answer without reading the body (415 for a type it cannot parse). node:http then
    // discards the rest of a request nobody read, so the connection can carry the next one; but
    // the pipe has read it, into a tee nobody reads. Give the request back to node:http.
    reply.raw.once('finish', () => {
      if (tee.readableFlowing === null && !payload.readableEnded) {
        payload.unpipe(tee);
        payload.resume();
      }
    });
    done(null, tee);
  };
}

/**
 * Callback-style hooks rather than async functions: Fastify then neither makes nor awaits a
 * promise per hook. A hook that answers with `reply.send()` does not call `done`.
 */
function runProtocol(idem: Idempotency): preHandlerHookHandler {
  const maxResponseBytes = idem.limits.maxResponseBytes;
  return function idempotencyPreHandler(request, reply, done) {
    idem.begin(new FastifyNeutralRequest(request)).then((decision) => {
      if (decision.action === 'respond') {
        send(reply, decision.response);
        return;
      }
      if (decision.action === 'execute') {
        if (!capture(reply.raw, decision, maxResponseBytes)) {
          // The client is gone and the key released: nothing is left to run or answer.
          reply.hijack();
          return;
        }
        (request as Tracked)[EXECUTION] = decision;
      }
      done();
    }, done);
  };
}

const releaseOnError: onErrorHookHandler = function idempotencyReleaseOnError(request, _reply, error, done) {
  const execution = (request as Tracked)[EXECUTION];
  if (execution === null) return done();
  execution.abort(error).then(() => done());
};

/** The engine's view of a Fastify request: a class, so a request costs one small object. */
class FastifyNeutralRequest implements IdempotencyRequest {
  readonly method: string;
  readonly url: string;
  readonly #request: FastifyRequest;

  constructor(request: FastifyRequest) {
    this.method = request.method;
    this.url = request.url;
    this.#request = request;
  }

  header(name: string): string | undefined {
    return headerOf(this.#request.headers, name);
  }

  /** The route's URL pattern as registered (`/payments/:id`). */
  get route(): string | undefined {
    return this.#request.routeOptions?.url;
  }

  get remoteAddress(): string | undefined {
    return this.#request.ip;
  }

  body(maxBytes: number): Promise<Uint8Array | ParsedBody | null> {
    const request = this.#request;
    const record = (request as Tracked)[BODY];
    if (record === PARSED) {
      // Fastify's bodyLimit bounds a chunked JSON body; a declared length is checked here too.
      if (Number(request.headers['content-length']) > maxBytes) return Promise.reject(tooLarge(maxBytes));
      return Promise.resolve(request.body === undefined ? null : { parsed: request.body });
    }
    if (record === null || (record.size === 0 && !record.overflow)) return Promise.resolve(null);
    if (record.overflow || record.size > maxBytes) return Promise.reject(tooLarge(maxBytes));
    return Promise.resolve(
      record.chunks.length === 1 ? (record.chunks[0] as Buffer) : Buffer.concat(record.chunks, record.size),
    );
  }
}

/** Sends a replay or an idempo error through `reply`, so the app's onSend and onResponse hooks see it. */
function send(reply: FastifyReply, response: IdempotencyResponse): FastifyReply {
  const { headers } = response;
  if (namesRepeat(headers)) {
    // `reply.header()` keeps one value per name (but Set-Cookie's): a repeated name goes as a list.
    const grouped: Record<string, string | string[]> = {};
    for (const [name, value] of headers) {
      const prior = grouped[name];
      grouped[name] = prior === undefined ? value : ([] as string[]).concat(prior, value);
    }
    reply.headers(grouped);
  } else {
    // Most responses name each header once: set them as they come, without first building the
    // object `reply.headers()` takes.
    for (const [name, value] of headers) reply.header(name, value);
  }
  return reply.code(response.status).send(asBuffer(response.body));
}

/** Whether a header name occurs twice among the pairs. */
function namesRepeat(headers: readonly (readonly [string, string])[]): boolean {
  for (let i = 1; i < headers.length; i++) {
    const name = (headers[i] as readonly [string, string])[0];
    for (let j = 0; j < i; j++) if ((headers[j] as readonly [string, string])[0] === name) return true;
  }
  return false;
}
