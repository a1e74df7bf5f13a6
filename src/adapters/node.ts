/**
 * The node:http adapter: wraps a plain request listener. It translates `IncomingMessage` and
 * `ServerResponse` to the engine's neutral shapes directly, never through web `Request`/`Response`
 * (that conversion alone cost a bare node:http server about 60% of its throughput).
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { failureOf, HANDLER_FAILED_MESSAGE, IDEMPO_FAILED_MESSAGE } from '../engine/error-responses.js';
import type { Decision, Execution, Idempotency, IdempotencyContext, IdempotencyRequest } from '../engine/types.js';
import { headerOf, readRestoring } from './node-body.js';
import { capture, respondEarly, writeResponse } from './node-response.js';

export { capture, respondEarly, writeResponse };

/** A node:http request listener, sync or async. */
export type NodeListener = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

/** The context kept on the request itself: a WeakMap entry per request costs more to make and to collect. */
const CONTEXT = Symbol('idempo.context');
type WithContext = IncomingMessage & { [CONTEXT]?: IdempotencyContext };

/**
 * The idempotency context of a request the wrapped listener is running under, or `undefined`
 * when idempo does not protect it (method not covered, no key, fail-open).
 *
 * @example
 * ```ts
 * http.createServer(idempotent(idem, async (req, res) => {
 *   const ctx = idempotencyContext(req);
 *   const charge = ctx ? await ctx.step('charge', chargeCard) : await chargeCard();
 *   res.end(JSON.stringify(charge));
 * }));
 * ```
 */
export function idempotencyContext(req: IncomingMessage): IdempotencyContext | undefined {
  return (req as WithContext)[CONTEXT];
}

/**
 * Wraps a node:http listener so that keyed requests follow the idempotency protocol.
 *
 * @example
 * ```ts
 * import http from 'node:http';
 * import { createIdempotency } from 'idempo';
 * import { createMemoryStore } from 'idempo/memory';
 * import { idempotent } from 'idempo/node';
 *
 * const idem = createIdempotency({ store: createMemoryStore() });
 * http.createServer(idempotent(idem, (req, res) => {
 *   res.writeHead(201, { 'content-type': 'application/json' }).end('{"id":"pay_1"}');
 * })).listen(3000);
 * ```
 */
export function idempotent(idem: Idempotency, listener: NodeListener): NodeListener {
  return function idempotentListener(req: IncomingMessage, res: ServerResponse): void {
    void serve(idem, listener, req, res);
  };
}

async function serve(idem: Idempotency, listener: NodeListener, req: IncomingMessage, res: ServerResponse) {
  const request = new NodeRequest(req);
  let decision: Decision;
  try {
    decision = await idem.begin(request);
  } catch (error) {
    failBeforeHandler(res, error, idem, request);
    return;
  }
  if (decision.action === 'respond') return writeResponse(res, decision.response);
  const execution = decision.action === 'execute' ? decision : undefined;
  if (execution) {
    if (!capture(res, execution, idem.limits.maxResponseBytes)) return;
    (req as WithContext)[CONTEXT] = execution.context;
  }
  try {
    const result = listener(req, res);
    if (result && typeof result.then === 'function') {
      // A client that hangs up does not stop the work: the lease is renewed while the listener's promise runs.
      execution?.track(result);
      await result;
    }
  } catch (error) {
    await failInHandler(res, error, execution, idem, request);
  }
}

async function failInHandler(
  res: ServerResponse,
  error: unknown,
  execution: Execution | undefined,
  idem: Idempotency,
  request: IdempotencyRequest,
): Promise<void> {
  // Release before answering, so a client retrying at once finds the key free, not in flight.
  await execution?.abort(error);
  if (res.headersSent) {
    res.destroy(error instanceof Error ? error : undefined);
    return;
  }
  // An IdempotencyError the listener throws (the gateway's upstream errors) keeps its own status.
  answerFailure(res, error, idem, request, HANDLER_FAILED_MESSAGE);
}

/**
 * Neutral view of an IncomingMessage; headers are read on demand and the body only when asked.
 * A class, so a request costs one small object rather than an object and two closures.
 */
class NodeRequest implements IdempotencyRequest {
  readonly method: string;
  readonly url: string;
  readonly #req: IncomingMessage;

  constructor(req: IncomingMessage) {
    this.method = req.method ?? 'GET';
    this.url = req.url ?? '/';
    this.#req = req;
  }

  header(name: string): string | undefined {
    return headerOf(this.#req.headers, name);
  }

  get remoteAddress(): string | undefined {
    return this.#req.socket?.remoteAddress;
  }

  /** The bytes stay in req's stream, so the listener reads the body as if idempo had not. */
  body(maxBytes: number): Promise<Buffer | null> {
    return readRestoring(this.#req, maxBytes);
  }
}

function failBeforeHandler(res: ServerResponse, error: unknown, idem: Idempotency, request: IdempotencyRequest): void {
  if (res.headersSent || res.destroyed || res.req?.destroyed) {
    res.destroy();
    return;
  }
  answerFailure(res, error, idem, request, IDEMPO_FAILED_MESSAGE);
}

/** Answers with idempo's error response for `error` and closes the connection. */
function answerFailure(
  res: ServerResponse,
  error: unknown,
  idem: Idempotency,
  request: IdempotencyRequest,
  message: string,
): void {
  writeResponse(res, idem.formatError(failureOf(error, message), request), true);
}
