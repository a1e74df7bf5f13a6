/**
 * The Express adapter (`idempo/express`): a middleware that puts the routes after it under the
 * idempotency protocol. It translates Express's `req`/`res` (node:http objects underneath) to the
 * engine's neutral shapes and back, with the node adapter's response capture; Express 5 and 4.
 *
 * @module
 */
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { createIdempotency } from '../engine/engine.js';
import type {
  Idempotency,
  IdempotencyContext,
  IdempotencyOptions,
  IdempotencyRequest,
  ParsedBody,
} from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import { capture, writeResponse } from './node.js';
import { bodyOf, headerOf } from './node-body.js';

declare global {
  // Express declares its request type in this global namespace; augmenting it is how its middleware adds fields.
  namespace Express {
    interface Request {
      /**
       * The idempotency context of this request, set by `idempotency()`: the real one when idempo
       * protects the request, otherwise one whose `step()` simply runs (method not covered, no key,
       * fail-open), so handlers can call `req.idempotency.step()` either way.
       */
      idempotency?: IdempotencyContext;
    }
  }
}

/**
 * Options of {@link idempotency}: the engine's options, or an engine made with
 * `createIdempotency()` to share one engine (and its store) between several middlewares or apps.
 */
export type ExpressIdempotencyOptions = IdempotencyOptions | { readonly idempotency: Idempotency };

/** Marks a request the protocol already runs for; a property, which costs less than a WeakSet entry. */
const HANDLED = Symbol('idempo.handled');
type Marked = Request & { [HANDLED]?: true };

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
 *   const charge = await req.idempotency!.step('charge', () => charge(req.body));
 *   res.status(201).json(charge);
 * });
 * ```
 */
export function idempotency(options: ExpressIdempotencyOptions): RequestHandler {
  const idem = 'idempotency' in options ? options.idempotency : createIdempotency(options);
  const maxResponseBytes = idem.limits.maxResponseBytes;
  return function idempotencyMiddleware(req: Request, res: Response, next: NextFunction): void {
    // Mounted twice on one path (app and router): the outer one already runs the protocol.
    if ((req as Marked)[HANDLED]) {
      next();
      return;
    }
    (req as Marked)[HANDLED] = true;
    idem.begin(new ExpressRequest(req)).then((decision) => {
      if (decision.action === 'respond') {
        writeResponse(res, decision.response);
        return;
      }
      if (decision.action === 'execute') {
        req.idempotency = decision.context;
        capture(res, decision, maxResponseBytes);
      } else {
        req.idempotency = unprotectedContext();
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
}
