/**
 * The Express adapter (`idempo/express`): a middleware that puts the routes after it under the
 * idempotency protocol. It translates Express's `req`/`res` (node:http objects underneath) to the
 * engine's neutral shapes and back, with the node adapter's response capture; Express 5 and 4.
 *
 * @module
 */
import { IncomingMessage } from 'node:http';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { IdempotencyContext, IdempotencyRequest, ParsedBody } from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import { type EngineOrOptions, engineOf } from './engine-of.js';
import { capture, writeResponse } from './node.js';
import { bodyOf, headerOf } from './node-body.js';
import { PrototypePatch, swappedPrototype } from './swapped-prototype.js';

declare global {
  // Express declares its request type in this global namespace; augmenting it is how its middleware adds fields.
  namespace Express {
    interface Request {
      /**
       * The idempotency context of this request, set by `idempotency()`: the real one when idempo
       * protects the request, otherwise one whose `step()` simply runs (method not covered, no key,
       * fail-open), so handlers can call `req.idempotency.step()` either way. Declared present, as
       * express-session declares `req.session`, so routes behind the middleware need no `!`; on a
       * route the middleware does not cover it is `undefined` at run time.
       */
      idempotency: IdempotencyContext;
    }
  }
}

/**
 * Options of {@link idempotency}: the engine's options, or an engine made with
 * `createIdempotency()` to share one engine (and its store) between several middlewares or apps.
 */
export type ExpressIdempotencyOptions = EngineOrOptions;

/**
 * Contexts of requests whose (swapped) prototype carries the `idempotency` accessor: Express
 * documents `app.request` as the place to extend requests, and an accessor there keeps the
 * context in this WeakMap instead of adding a property to every request (see
 * swapped-prototype.ts).
 */
const CONTEXTS = new WeakMap<Request, IdempotencyContext>();

const CONTEXT_ACCESSOR = new PrototypePatch(
  () => ({
    idempotency: {
      get(this: Request) {
        return CONTEXTS.get(this);
      },
      set(this: Request, value: IdempotencyContext | undefined) {
        if (value === undefined) CONTEXTS.delete(this);
        else CONTEXTS.set(this, value);
      },
    },
  }),
  // Something else (or a parent app's prototype, whose accessor then serves) defines it already.
  (proto) => 'idempotency' in proto,
);

function setContext(req: Request, context: IdempotencyContext): void {
  const proto = swappedPrototype(req, IncomingMessage.prototype);
  if (proto !== undefined && !Object.hasOwn(req, 'idempotency') && CONTEXT_ACCESSOR.on(proto)) {
    CONTEXTS.set(req, context);
  } else {
    req.idempotency = context;
  }
}

/**
 * Express middleware for the idempotency protocol. Mount it before the routes it protects; it
 * works before or after `express.json()`: before, it reads the raw bytes and hands them back to
 * the stream for the parser; after, it fingerprints the parsed `req.body` (the engine
 * canonicalises JSON, so both fingerprint a JSON body alike). Responses are captured as they are
 * written (`res.send`, `res.json`, `res.end`, streams) and the final `end()` waits until the
 * response is stored. An error a route throws goes to your error handlers as usual, and the
 * response they send decides: a 5xx (the default handler's 500) releases the key.
 *
 * @example
 * ```ts
 * import express from 'express';
 * import { createMemoryStore } from 'idempo/memory';
 * import { idempotency } from 'idempo/express';
 *
 * const app = express();
 * app.use(express.json());
 * app.use(idempotency({ store: createMemoryStore() }));
 * app.post('/payments', async (req, res) => {
 *   const payment = await req.idempotency.step('charge', () => chargeCard(req.body));
 *   res.status(201).json(payment);
 * });
 * ```
 */
export function idempotency(options: ExpressIdempotencyOptions): RequestHandler {
  const idem = engineOf(options);
  const maxResponseBytes = idem.limits.maxResponseBytes;
  return function idempotencyMiddleware(req: Request, res: Response, next: NextFunction): void {
    // Mounted twice on one path (app and router): the outer one already runs the protocol, and
    // set the context before it let the request go on.
    if (req.idempotency !== undefined) {
      next();
      return;
    }
    idem.begin(new ExpressRequest(req)).then((decision) => {
      if (decision.action === 'respond') {
        writeResponse(res, decision.response);
        return;
      }
      if (decision.action === 'execute') {
        if (!capture(res, decision, maxResponseBytes)) return;
        setContext(req, decision.context);
      } else {
        setContext(req, unprotectedContext());
      }
      next();
    }, next);
  };
}

/** The engine's view of an Express request: a class, so a request costs one small object. */
class ExpressRequest implements IdempotencyRequest {
  readonly method: string;
  readonly url: string;
  readonly #req: Request;

  constructor(req: Request) {
    this.method = req.method;
    // originalUrl keeps the mount path that `app.use('/api', …)` strips from req.url.
    this.url = req.originalUrl ?? req.url;
    this.#req = req;
  }

  header(name: string): string | undefined {
    return headerOf(this.#req.headers, name);
  }

  body(maxBytes: number): Promise<Uint8Array | ParsedBody | null> {
    const req = this.#req;
    return bodyOf(req, maxBytes, () => req.body, 'req.body');
  }

  /** The matched route's pattern, once Express has matched one (at once for a middleware mounted on the route). */
  get route(): string | undefined {
    const path: unknown = this.#req.route?.path;
    return typeof path === 'string' ? (this.#req.baseUrl ?? '') + path : undefined;
  }

  get remoteAddress(): string | undefined {
    return this.#req.ip ?? this.#req.socket?.remoteAddress;
  }
}
