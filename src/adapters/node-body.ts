/**
 * Request-side helpers for every adapter on node:http (node, Express, Koa, NestJS): a header
 * lookup, and a body reader that hands the bytes back to the stream, so the listener or a body
 * parser after idempo reads the request as if idempo had never touched it, on the same `req`
 * object the framework keeps from one middleware to the next.
 *
 * @module
 */
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http';
import { IdempotencyConfigError } from '../engine/errors.js';
import type { ParsedBody } from '../engine/types.js';
import { tooLarge } from '../engine/web.js';

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

/** The body idempo read, kept on the request itself: a WeakMap entry per request costs far more to create and collect. */
const BODY = Symbol('idempo.body');
type WithBody = IncomingMessage & { [BODY]?: Buffer };

/**
 * The bytes of `req`'s body when idempo has read them (they are also still in its stream), so
 * a proxy can send them on as they are instead of streaming them a second time.
 */
export function bodyAlreadyRead(req: IncomingMessage): Buffer | undefined {
  return (req as WithBody)[BODY];
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
  if ((req as WithBody)[BODY] !== undefined || !(req.readableEnded || req.readableDidRead)) {
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
  const known = (req as WithBody)[BODY];
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
    return observePushes(req as WithBody);
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
      (req as WithBody)[BODY] = body;
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
 * A client that disconnects mid-body leaves the promise pending; nothing was claimed yet, and it
 * is collected with the request.
 */
function observePushes(req: WithBody): Promise<Buffer | null> {
  const push = req.push;
  return new Promise((resolve) => {
    let chunks: Buffer[] | undefined;
    let total = 0;
    req.push = function observedPush(this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk === null) {
        req.push = push;
        // The whole message is in: nothing is left on the wire for node:http to drain when the
        // response ends. It only knows the stream was consumed once something calls _read(), which
        // a stream that already ended never does, and would otherwise _dump() it (about 1.5% of a
        // request's CPU).
        (req as { _consuming?: boolean })._consuming = true;
        const body =
          chunks === undefined ? null : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, total);
        if (body !== null) req[BODY] = body;
        resolve(body);
      } else if (chunk instanceof Buffer) {
        if (chunks === undefined) chunks = [chunk];
        else chunks.push(chunk);
        total += chunk.length;
      }
      return push.call(this, chunk, encoding);
    };
  });
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
    throw new IdempotencyConfigError(
      `idempo could not fingerprint the body of ${req.method} ${req.url}: the request stream was already read and ${where} holds no parsed body. Mount idempo before the middleware that reads the body, or after a body parser that sets ${where}.`,
    );
  }
  return { parsed: body };
}

function fail(error: Error): never {
  throw error;
}
