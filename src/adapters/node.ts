/**
 * The node:http adapter: wraps a plain request listener. It translates `IncomingMessage` and
 * `ServerResponse` to the engine's neutral shapes directly, never through web `Request`/`Response`
 * (that conversion alone cost a bare node:http server about 60% of its throughput).
 *
 * @module
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { IdempotencyError, IdempotencyHandlerError } from '../engine/errors.js';
import type {
  Execution,
  Idempotency,
  IdempotencyContext,
  IdempotencyRequest,
  IdempotencyResponse,
} from '../engine/types.js';
import { headerOf, readRestoring } from './node-body.js';

/** A node:http request listener, sync or async. */
export type NodeListener = (req: IncomingMessage, res: ServerResponse) => void | Promise<void>;

const contexts = new WeakMap<IncomingMessage, IdempotencyContext>();

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
  return contexts.get(req);
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
    const request = nodeRequest(req);
    idem.begin(request).then(
      (decision) => {
        if (decision.action === 'respond') return writeResponse(res, decision.response);
        if (decision.action === 'pass') return runListener(listener, req, res, undefined, idem, request);
        contexts.set(req, decision.context);
        capture(res, decision, idem.limits.maxResponseBytes);
        return runListener(listener, req, res, decision, idem, request);
      },
      (error: unknown) => failBeforeHandler(res, error, idem, request),
    );
  };
}

function runListener(
  listener: NodeListener,
  req: IncomingMessage,
  res: ServerResponse,
  execution: Execution | undefined,
  idem: Idempotency,
  request: IdempotencyRequest,
): void {
  const fail = async (error: unknown) => {
    // Release before answering, so a client retrying at once finds the key free, not in flight.
    await execution?.abort(error);
    if (res.headersSent) {
      res.destroy(error instanceof Error ? error : undefined);
      return;
    }
    // An IdempotencyError the listener throws (the gateway's upstream errors) keeps its own status.
    const failure =
      error instanceof IdempotencyError
        ? error
        : new IdempotencyHandlerError('The request failed before it completed; it may be retried with the same key.', {
            cause: error,
          });
    writeResponse(res, idem.formatError(failure, request), true);
  };
  try {
    const result = listener(req, res);
    if (result && typeof result.then === 'function') result.then(undefined, fail);
  } catch (error) {
    void fail(error);
  }
}

/** Neutral view of an IncomingMessage; headers are read on demand and the body only when asked. */
function nodeRequest(req: IncomingMessage): IdempotencyRequest {
  return {
    method: req.method ?? 'GET',
    url: req.url ?? '/',
    header: (name) => headerOf(req.headers, name),
    // The bytes go back onto req's stream, so the listener reads the body as if idempo had not.
    body: (maxBytes) => readRestoring(req, maxBytes),
  };
}

/** Writes a neutral response in one go. */
export function writeResponse(res: ServerResponse, response: IdempotencyResponse, close = false): void {
  if (res.headersSent || res.destroyed) return;
  const flat: string[] = [];
  for (const [name, value] of response.headers) flat.push(name, value);
  if (close) flat.push('connection', 'close');
  res.writeHead(response.status, flat);
  res.end(response.body);
}

function failBeforeHandler(res: ServerResponse, error: unknown, idem: Idempotency, request: IdempotencyRequest): void {
  if (res.headersSent || res.destroyed || res.req?.destroyed) {
    res.destroy();
    return;
  }
  const failure =
    error instanceof IdempotencyError
      ? error
      : new IdempotencyHandlerError('idempo could not process the request; it may be retried with the same key.', {
          cause: error,
        });
  writeResponse(res, idem.formatError(failure, request), true);
}

type HeaderArg =
  | Record<string, string | number | readonly string[] | undefined>
  | readonly (string | readonly string[])[];

/**
 * Tees what the listener writes into a capture, streaming it to the client as it goes, and holds
 * back only the final `end()` until the response is stored: a client never sees a response end
 * that a retry could not replay.
 */
export function capture(res: ServerResponse, execution: Execution, maxBytes: number): void {
  let status = 0;
  let headers: [string, string][] | undefined;
  let chunks: Buffer[] | null = [];
  let size = 0;
  let ended = false;

  const snapshot = (extra?: HeaderArg) => {
    status = res.statusCode;
    headers = headerPairs(res.getHeaders(), extra);
  };
  const keep = (chunk: unknown, encoding: unknown) => {
    if (chunks === null || chunk === undefined || chunk === null || typeof chunk === 'function') return;
    const buffer =
      typeof chunk === 'string'
        ? Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8')
        : Buffer.from((chunk as Uint8Array).buffer, (chunk as Uint8Array).byteOffset, (chunk as Uint8Array).byteLength);
    size += buffer.length;
    if (size > maxBytes) chunks = null;
    else chunks.push(buffer);
  };

  const writeHead = res.writeHead;
  res.writeHead = function capturedWriteHead(this: ServerResponse, code: number, ...rest: unknown[]) {
    if (headers === undefined) {
      res.statusCode = code;
      const extra = rest.find((arg) => typeof arg === 'object' && arg !== null) as HeaderArg | undefined;
      snapshot(extra);
    }
    return (writeHead as (...args: unknown[]) => ServerResponse).call(this, code, ...rest);
  } as ServerResponse['writeHead'];

  const write = res.write;
  res.write = function capturedWrite(this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
    keep(chunk, rest[0]);
    return (write as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
  } as ServerResponse['write'];

  const end = res.end;
  res.end = function capturedEnd(this: ServerResponse, ...args: unknown[]) {
    if (ended) return this;
    ended = true;
    const [chunk, encoding] = args;
    if (typeof chunk !== 'function') keep(chunk, encoding);
    if (headers === undefined) snapshot();
    const body = chunks === null ? null : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
    execution.commit({ status, headers: headers as [string, string][], body }).then((instead) => {
      if (instead && !res.headersSent) {
        // Nothing has gone out yet: send the engine's answer rather than a result that was not kept.
        res.writeHead = writeHead;
        res.write = write;
        res.end = end;
        for (const name of res.getHeaderNames()) res.removeHeader(name);
        writeResponse(res, instead);
        return;
      }
      (end as (...args: unknown[]) => ServerResponse).apply(res, args);
    });
    return this;
  } as ServerResponse['end'];

  res.once('close', () => {
    if (!ended) void execution.abort(new Error('The response closed before the handler ended it.'));
  });
}

function headerPairs(base: Record<string, unknown>, extra?: HeaderArg): [string, string][] {
  const merged = new Map<string, unknown>();
  for (const name in base) merged.set(name, base[name]);
  if (Array.isArray(extra)) {
    if (extra.length > 0 && Array.isArray(extra[0])) {
      for (const [name, value] of extra as unknown as [string, string][]) merged.set(name.toLowerCase(), value);
    } else {
      for (let i = 0; i + 1 < extra.length; i += 2) {
        const name = String(extra[i]).toLowerCase();
        const prior = merged.get(name);
        merged.set(name, prior === undefined ? extra[i + 1] : ([] as unknown[]).concat(prior, extra[i + 1]));
      }
    }
  } else if (extra) {
    for (const name in extra) merged.set(name.toLowerCase(), (extra as Record<string, unknown>)[name]);
  }
  const pairs: [string, string][] = [];
  for (const [name, value] of merged) {
    if (value === undefined) continue;
    if (Array.isArray(value)) for (const item of value) pairs.push([name, String(item)]);
    else pairs.push([name, String(value)]);
  }
  return pairs;
}
