/**
 * Request-side helpers for every adapter on node:http (node, Express, Koa, NestJS): a header
 * lookup, and a body reader that hands the bytes back to the stream, so the listener or a body
 * parser after idempo reads the request as if idempo had never touched it, on the same `req`
 * object the framework keeps from one middleware to the next.
 *
 * @module
 */
import { type IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { tooLarge } from '../engine/error-responses.js';
import type { ParsedBody } from '../engine/types.js';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';
import { PrototypePatch, swappedPrototype } from './swapped-prototype.js';

/** A header value by lower-case name, several values joined with `, `. */
export function headerOf(headers: IncomingHttpHeaders, name: string): string | undefined {
  const value = headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** Whether the request announces a body (RFC 9112 §6.3: a length or a transfer coding). */
export function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * The body idempo read of a plain `IncomingMessage`, kept on the request itself: there a property
 * costs next to nothing, and a WeakMap entry per request far more to create and collect.
 */
const BODY = Symbol('idempo.body');
type WithBody = IncomingMessage & { [BODY]?: Buffer };

/**
 * What idempo read of a request whose prototype a framework swapped (Express gives every `req`
 * its app's `app.request`), and, while it watches the body arrive, where the pushes go. Kept in
 * {@link SWAPPED} rather than on the request (see swapped-prototype.ts for why).
 */
class RawBody {
  chunks: Buffer[] | undefined = undefined;
  total = 0;
  body: Buffer | undefined = undefined;
  /** Set while the pushes are watched; `undefined` once the body is in. */
  resolve: ((body: Buffer | null) => void) | undefined = undefined;
  /** A push is on its way down the prototype chain, already seen. */
  passing = false;
}

/** Raw-body state of requests whose prototype was swapped. */
const SWAPPED = new WeakMap<IncomingMessage, RawBody>();

/** The body idempo read of `req`, wherever it was kept. */
function storedBody(req: IncomingMessage): Buffer | undefined {
  return (req as WithBody)[BODY] ?? SWAPPED.get(req)?.body;
}

/** Keeps the body idempo read: on a plain `IncomingMessage` itself, else in {@link SWAPPED}. */
function keepBody(req: IncomingMessage, body: Buffer): void {
  if (Object.getPrototypeOf(req) === IncomingMessage.prototype) {
    (req as WithBody)[BODY] = body;
    return;
  }
  const state = SWAPPED.get(req);
  if (state === undefined) {
    const kept = new RawBody();
    kept.body = body;
    SWAPPED.set(req, kept);
  } else {
    state.body = body;
  }
}

/**
 * The bytes of `req`'s body when idempo has read them (they are also still in its stream), so
 * a proxy can send them on as they are instead of streaming them a second time.
 */
export function bodyAlreadyRead(req: IncomingMessage): Buffer | undefined {
  return storedBody(req);
}

/**
 * The request body for the engine: the raw bytes when the stream is still unread (they are handed
 * back to it), else what the framework's body parser left (`parsed()`, named `where` in errors).
 */
export function bodyOf(
  req: IncomingMessage,
  maxBytes: number,
  parsed: () => unknown,
  where: string,
): Promise<Uint8Array | ParsedBody | null> {
  if (!hasBody(req)) return Promise.resolve(null);
  if (storedBody(req) !== undefined || !(req.readableEnded || req.readableDidRead)) {
    return readRestoring(req, maxBytes);
  }
  try {
    return Promise.resolve(parsedBodyOf(parsed(), req, maxBytes, where));
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * Reads the whole body, at most `maxBytes` of it, then puts the bytes back at the front of the
 * stream before it emits `end`, so the next reader (a body parser, the handler) gets them all.
 *
 * It reads in paused mode and stops once the parser has seen the whole message (`complete`)
 * without draining past the end: `end` is only scheduled, on the next tick, when the last bytes
 * are read, and the synchronous `unshift` makes the stream non-empty again so it never fires.
 * An empty body is never read at all.
 */
export function readRestoring(req: IncomingMessage, maxBytes: number): Promise<Buffer | null> {
  const known = storedBody(req);
  if (known !== undefined) return known.length > maxBytes ? Promise.reject(tooLarge(maxBytes)) : Promise.resolve(known);
  if (!hasBody(req)) return Promise.resolve(null);
  const length = req.headers['content-length'];
  if (Number(length) > maxBytes) return Promise.reject(tooLarge(maxBytes));
  if (req.complete && req.readableLength === 0) return Promise.resolve(null);
  if (
    length !== undefined &&
    req.headers['transfer-encoding'] === undefined &&
    Number(length) <= req.readableHighWaterMark &&
    req.readableLength === 0 &&
    !req.readableDidRead
  ) {
    const proto = swappedPrototype(req, IncomingMessage.prototype);
    return proto !== undefined && watchesThrough(proto, req) ? watchThroughPrototype(req) : observePushes(req);
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    const onReadable = () => {
      while (req.readableLength > 0) {
        const chunk = req.read() as Buffer | null;
        if (chunk === null) break;
        total += chunk.length;
        if (total > maxBytes) {
          cleanup();
          // Drain the rest so the 413 can be sent on a connection that stays usable.
          req.resume();
          reject(tooLarge(maxBytes));
          return;
        }
        chunks.push(chunk);
      }
      if (!req.complete) return;
      cleanup();
      if (total === 0) {
        resolve(null);
        return;
      }
      const body = chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
      req.unshift(body);
      keepBody(req, body);
      resolve(body);
    };
    const onError = (error: Error) => {
      cleanup();
      reject(error);
    };
    const onClose = () => {
      if (!req.complete) onError(new Error('The client closed the connection before the request body arrived.'));
    };
    const cleanup = () => {
      req.off('readable', onReadable);
      req.off('error', onError);
      req.off('close', onClose);
    };
    req.on('readable', onReadable);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/**
 * The body as node:http's parser pushes it into the request stream, seen on its way in and left
 * there, unread, for the listener: one pass through the stream instead of a read and an unshift,
 * with no listeners to add and remove. Only for a body the stream buffers whole without pausing
 * the socket (a known length within its high-water mark, nothing pushed yet): a longer one would
 * wait for a reader that only comes once it has arrived.
 *
 * This one replaces `push` on the request itself, for a plain `IncomingMessage` (where that is
 * cheap) and for a request whose `push` something else already replaced;
 * {@link watchThroughPrototype} does the same through a swapped prototype.
 *
 * A client that disconnects mid-body leaves the promise pending; nothing was claimed yet, and it
 * is collected with the request.
 */
function observePushes(req: IncomingMessage): Promise<Buffer | null> {
  const push = req.push;
  const state = new RawBody();
  return new Promise((resolve) => {
    state.resolve = resolve;
    req.push = function observedPush(this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk === null) req.push = push;
      see(state, req, chunk);
      return push.call(this, chunk, encoding);
    };
  });
}

/**
 * {@link observePushes} for a request whose prototype carries the watching `push`: its state goes
 * in {@link SWAPPED}, and nothing is added to the request.
 */
function watchThroughPrototype(req: IncomingMessage): Promise<Buffer | null> {
  const state = new RawBody();
  SWAPPED.set(req, state);
  return new Promise((resolve) => {
    state.resolve = resolve;
  });
}

/** The watching `push`, installed once on each swapped prototype it is used through. */
const WATCHING = new PrototypePatch(
  (proto) => {
    const parent = Object.getPrototypeOf(proto) as IncomingMessage;
    return {
      push: {
        writable: true,
        value: function push(this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
          const state = SWAPPED.get(this);
          if (state === undefined || state.resolve === undefined || state.passing) {
            return parent.push.call(this, chunk, encoding);
          }
          see(state, this, chunk);
          // A sub-app's `app.request` inherits its parent app's, and both may carry this push: the
          // first one down the chain sees the chunk, the ones it calls only pass it on.
          state.passing = true;
          try {
            return parent.push.call(this, chunk, encoding);
          } finally {
            state.passing = false;
          }
        },
      },
    };
  },
  (proto) => Object.hasOwn(proto, 'push'),
);

/**
 * Whether the pushes into `req` can be watched through `proto`, installing a `push` there on first
 * use that calls the inherited one for every request not watched.
 */
function watchesThrough(proto: object, req: IncomingMessage): boolean {
  // Something replaced this request's push, or a watch already runs through the prototype: wrap
  // what is there, as for a plain request, so both see the body.
  if (Object.hasOwn(req, 'push') || SWAPPED.get(req)?.resolve !== undefined) return false;
  return WATCHING.on(proto);
}

/** One push into a watched request, through its prototype or its own `push`: a chunk of the body, or `null` at its end. */
function see(state: RawBody, req: IncomingMessage, chunk: unknown): void {
  if (chunk === null) {
    const { chunks, total, resolve } = state;
    state.chunks = undefined;
    state.resolve = undefined;
    markConsumed(req);
    const body =
      chunks === undefined ? null : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
    if (body !== null) keepBody(req, body);
    (resolve as (body: Buffer | null) => void)(body);
  } else if (chunk instanceof Buffer) {
    if (state.chunks === undefined) state.chunks = [chunk];
    else state.chunks.push(chunk);
    state.total += chunk.length;
  }
}

/**
 * The whole message is in: nothing is left on the wire for node:http to drain when the response
 * ends. It only knows the stream was consumed once something calls _read(), which a stream that
 * already ended never does, and would otherwise _dump() it (about 1.5% of a request's CPU).
 * `_consuming` is a field every `IncomingMessage` is constructed with, so setting it adds nothing.
 */
function markConsumed(req: IncomingMessage): void {
  (req as { _consuming?: boolean })._consuming = true;
}

/**
 * The body a framework's parser left on the request, as the engine takes it: bytes stay bytes,
 * text becomes UTF-8, anything else is a parsed value the engine fingerprints as canonical JSON.
 * `undefined` means the stream was read by something that kept nothing idempo can fingerprint.
 */
function parsedBodyOf(
  body: unknown,
  req: IncomingMessage,
  maxBytes: number,
  where: string,
): Uint8Array | ParsedBody | null {
  if (Number(req.headers['content-length']) > maxBytes) throw tooLarge(maxBytes);
  if (body instanceof Uint8Array) return body.length > maxBytes ? fail(tooLarge(maxBytes)) : body;
  if (typeof body === 'string') {
    const bytes = Buffer.from(body, 'utf8');
    return bytes.length > maxBytes ? fail(tooLarge(maxBytes)) : bytes;
  }
  if (body === undefined) {
    throw new IdempotencyConfigInvalidError(
      `idempo could not fingerprint the body of ${req.method} ${req.url}: the request stream was already read and ${where} holds no parsed body. Mount idempo before the middleware that reads the body, or after a body parser that sets ${where}.`,
    );
  }
  return { parsed: body };
}

function fail(error: Error): never {
  throw error;
}
