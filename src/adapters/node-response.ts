/**
 * Response-side helpers for every adapter on node:http: capturing what a handler writes so the
 * engine can store it, and writing a stored or error response in one go.
 *
 * @module
 */
import { ServerResponse } from 'node:http';
import { CLIENT_GONE } from '../engine/error-responses.js';
import type { Execution, IdempotencyResponse } from '../engine/types.js';
import { PrototypePatch, swappedPrototype } from './swapped-prototype.js';

/** Writes a neutral response in one go; `close` asks the client to open a new connection. */
export function writeResponse(res: ServerResponse, response: IdempotencyResponse, close = false): void {
  if (res.headersSent || res.destroyed) return;
  const flat: string[] = [];
  for (const [name, value] of response.headers) flat.push(name, value);
  if (close) flat.push('connection', 'close');
  res.writeHead(response.status, flat);
  res.end(response.body);
}

type HeaderArg =
  | Record<string, string | number | readonly string[] | undefined>
  | readonly (string | readonly string[])[];

type Method = (...args: unknown[]) => unknown;

const CAPTURE = Symbol('idempo.capture');
type CapturedResponse = ServerResponse & { [CAPTURE]: Capture };

/** What a captured response has written so far, and the methods it replaced. */
class Capture {
  status = 0;
  headers: [string, string][] | undefined = undefined;
  /** The body so far; `null` once it outgrew the limit and is no longer kept. */
  chunks: Buffer[] | null = [];
  size = 0;
  ended = false;
  /** Captured through the response's prototype rather than methods of its own. */
  onPrototype = false;
  /**
   * Set while the capture calls the methods it wraps. An Express sub-app's `app.response`
   * inherits from its parent app's, so both may carry the capturing methods, and the wrapped
   * method can be another capturing one: that one must pass the call on, not capture it again.
   */
  passing = false;
  /**
   * Set once the client no longer sees what the handler writes: it hung up, or was answered early
   * ({@link respondEarly}). The capture goes on, so the result is still stored when the handler
   * ends it, but nothing more is passed to the socket.
   */
  detached = false;
  /** The `Content-Length` the response declares, read at its first write; -1 when it declares none. */
  declared: number | undefined = undefined;
  /** Body bytes passed on to the socket so far. */
  sent = 0;
  /**
   * The last byte of a body whose `Content-Length` the writes have reached. A client reads such a
   * response as complete from its length, whatever happens to `end()`, so this byte waits with the
   * end until the response is stored.
   */
  tail: Buffer | undefined = undefined;

  constructor(
    readonly execution: Execution,
    readonly maxBytes: number,
    readonly writeHead: Method,
    readonly write: Method,
    readonly end: Method,
  ) {}

  snapshot(res: ServerResponse, extra?: HeaderArg): void {
    this.status = res.statusCode;
    this.headers = headerPairs(res.getHeaders(), extra);
  }

  keep(buffer: Buffer): void {
    if (this.chunks === null) return;
    this.size += buffer.length;
    if (this.size > this.maxBytes) this.chunks = null;
    else this.chunks.push(buffer);
  }
}

/** A chunk given to `write`/`end` as bytes; `undefined` for no chunk. */
function bytesOf(chunk: unknown, encoding: unknown): Buffer | undefined {
  if (chunk === undefined || chunk === null || typeof chunk === 'function') return undefined;
  if (typeof chunk === 'string') {
    return Buffer.from(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  }
  return asBuffer(chunk as Uint8Array);
}

/**
 * The same bytes as a Buffer, which is what the frameworks send as they are (a plain `Uint8Array`
 * they would serialise or reject): the bytes themselves when they are one, otherwise a view.
 */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The `Content-Length` a response declares, from the headers captured or set so far; -1 for none. */
function declaredLength(state: Capture, res: ServerResponse): number {
  const header =
    state.headers === undefined
      ? res.getHeader('content-length')
      : state.headers.find(([name]) => name === 'content-length')?.[1];
  const length = Number(header);
  return header !== undefined && Number.isSafeInteger(length) && length > 0 ? length : -1;
}

/**
 * Tees what the handler writes into a capture, streaming it to the client as it goes, and holds
 * back only the final `end()` until the response is stored: a client never sees a response end
 * that a retry could not replay.
 *
 * Returns `false`, and releases the key, when the client has already gone: nothing has run yet,
 * so the adapter must not start the handler.
 *
 * The replacement methods are shared functions that find their state on the response, not
 * closures made per response: with the listener below, a captured request allocates one object.
 *
 * A response whose prototype a framework swapped (Express's `app.response`) is captured through
 * that prototype instead (see swapped-prototype.ts), when nothing overrode these methods on it or
 * on the response.
 */
export function capture(res: ServerResponse, execution: Execution, maxBytes: number): boolean {
  if (res.destroyed) {
    // The client hung up while the key was being claimed: nothing has run, so the key is free again.
    void execution.abort(CLIENT_GONE);
    return false;
  }
  const proto = swappedPrototype(res, ServerResponse.prototype);
  if (proto !== undefined && capturesThrough(proto, res)) {
    const inherited = Object.getPrototypeOf(proto) as ServerResponse;
    const state = new Capture(
      execution,
      maxBytes,
      inherited.writeHead as Method,
      inherited.write as Method,
      inherited.end as Method,
    );
    state.onPrototype = true;
    SWAPPED.set(res, state);
    res.on('close', goneIfUnendedSwapped);
    return true;
  }
  const captured = res as CapturedResponse;
  captured[CAPTURE] = new Capture(execution, maxBytes, res.writeHead as Method, res.write as Method, res.end as Method);
  res.writeHead = capturedWriteHead as ServerResponse['writeHead'];
  res.write = capturedWrite as ServerResponse['write'];
  res.end = capturedEnd as ServerResponse['end'];
  res.on('close', goneIfUnended);
  return true;
}

/** Capture state of responses captured through their prototype. */
const SWAPPED = new WeakMap<ServerResponse, Capture>();
const METHODS = ['writeHead', 'write', 'end'] as const;

function overridesMethods(target: object): boolean {
  return METHODS.some((name) => Object.hasOwn(target, name));
}

/** The capturing methods, installed once on each swapped prototype they are used through. */
const CAPTURING = new PrototypePatch((proto) => {
  const parent = Object.getPrototypeOf(proto) as ServerResponse;
  const methods: Record<(typeof METHODS)[number], Method> = {
    writeHead(this: ServerResponse, code: unknown, ...rest: unknown[]) {
      const state = SWAPPED.get(this);
      return state === undefined || state.passing
        ? (parent.writeHead as Method).call(this, code, ...rest)
        : writeHeadThrough(state, this, code as number, rest);
    },
    write(this: ServerResponse, chunk: unknown, ...rest: unknown[]) {
      const state = SWAPPED.get(this);
      return state === undefined || state.passing
        ? (parent.write as Method).call(this, chunk, ...rest)
        : writeThrough(state, this, chunk, rest);
    },
    end(this: ServerResponse, ...args: unknown[]) {
      const state = SWAPPED.get(this);
      return state === undefined || state.passing
        ? (parent.end as Method).apply(this, args)
        : endThrough(state, this, args);
    },
  };
  return Object.fromEntries(METHODS.map((name) => [name, { value: methods[name], writable: true }]));
}, overridesMethods);

/** Whether `res` can be captured through `proto`, installing the methods there on first use. */
function capturesThrough(proto: object, res: ServerResponse): boolean {
  // Something patched this response already (compression, a logger), or a capture already runs
  // through the prototype: wrap what is there, as for any response, so both see the response.
  if (overridesMethods(res) || SWAPPED.has(res)) return false;
  return CAPTURING.on(proto);
}

function capturedWriteHead(this: CapturedResponse, code: number, ...rest: unknown[]): unknown {
  return writeHeadThrough(this[CAPTURE], this, code, rest);
}

function capturedWrite(this: CapturedResponse, chunk: unknown, ...rest: unknown[]): unknown {
  return writeThrough(this[CAPTURE], this, chunk, rest);
}

function capturedEnd(this: CapturedResponse, ...args: unknown[]): ServerResponse {
  return endThrough(this[CAPTURE], this, args);
}

function writeHeadThrough(state: Capture, res: ServerResponse, code: number, rest: unknown[]): unknown {
  if (state.headers === undefined) {
    res.statusCode = code;
    // writeHead(status, [reason], [headers]): the headers are the last object argument.
    const last = rest[rest.length - 1];
    state.snapshot(res, typeof last === 'object' && last !== null ? (last as HeaderArg) : undefined);
  }
  if (state.detached) return res;
  return passOn(state, state.writeHead, res, [code, ...rest]);
}

function writeThrough(state: Capture, res: ServerResponse, chunk: unknown, rest: unknown[]): unknown {
  // A write the wrapped end() makes itself (light-my-request's end calls this.write) is part of
  // what the capture already took: pass it on untouched.
  if (state.passing) return state.write.call(res, chunk, ...rest);
  const bytes = bytesOf(chunk, rest[0]);
  if (bytes === undefined) return passOn(state, state.write, res, [chunk, ...rest]);
  state.keep(bytes);
  if (state.detached) return true;
  state.declared ??= declaredLength(state, res);
  state.sent += bytes.length;
  if (state.declared < 0 || state.sent < state.declared)
    return passOn(state, state.write, res, [bytes, ...callbackOf(rest)]);
  // This write completes the declared length: all but its last byte goes now, that byte with the end.
  state.tail = bytes.subarray(bytes.length - 1);
  return passOn(state, state.write, res, [bytes.subarray(0, bytes.length - 1), ...callbackOf(rest)]);
}

/** The callback among `write`'s arguments after the chunk, as the only argument left. */
function callbackOf(rest: unknown[]): unknown[] {
  const last = rest[rest.length - 1];
  return typeof last === 'function' ? [last] : [];
}

/** Calls a method the capture wraps, with `passing` set for the call. */
function passOn(state: Capture, method: Method, res: ServerResponse, args: unknown[]): unknown {
  state.passing = true;
  try {
    return method.apply(res, args);
  } finally {
    state.passing = false;
  }
}

function endThrough(state: Capture, res: ServerResponse, args: unknown[]): ServerResponse {
  if (state.ended) return res;
  state.ended = true;
  const [chunk, encoding] = args;
  const bytes = bytesOf(chunk, encoding);
  if (bytes !== undefined) state.keep(bytes);
  if (state.headers === undefined) state.snapshot(res);
  const { chunks, size } = state;
  const body = chunks === null ? null : chunks.length === 1 ? (chunks[0] as Buffer) : Buffer.concat(chunks, size);
  const outcome = state.execution.commitNow({
    status: state.status,
    headers: state.headers as [string, string][],
    body,
  });
  // A synchronous store (memory) has stored it already: end now, in this turn.
  if (outcome instanceof Promise) outcome.then((instead) => finish(state, res, args, instead));
  else finish(state, res, args, outcome);
  return res;
}

/**
 * Ends the response as the handler asked, or, when the engine says its result must not reach the
 * client (not kept, or not stored), sends the engine's answer instead while nothing has gone out,
 * and otherwise aborts the response: a client must never read a clean end of a success that no
 * retry would replay.
 */
function finish(state: Capture, res: ServerResponse, args: unknown[], instead: IdempotencyResponse | undefined): void {
  if (state.detached) return;
  if (instead) {
    uncapture(state, res);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    for (const name of res.getHeaderNames()) res.removeHeader(name);
    writeResponse(res, instead);
    return;
  }
  if (state.tail !== undefined) passOn(state, state.write, res, [state.tail]);
  passOn(state, state.end, res, args);
}

/**
 * Answers the client now with `response`, which is not stored, while the handler's work goes on:
 * what it writes afterwards is still captured and stored when it ends (the client no longer sees
 * it), so a retry replays the real result. The gateway answers `504` this way when its upstream is
 * slow but has the request. If the handler's head already went out, the response is cut instead;
 * once the handler has ended it, this does nothing. On a response that is not captured it simply
 * writes `response`.
 *
 * @example
 * ```ts
 * const timer = setTimeout(() => respondEarly(res, idem.formatError(timeoutError, request)), 30_000);
 * ```
 */
export function respondEarly(res: ServerResponse, response: IdempotencyResponse): void {
  const state = captureOf(res);
  if (state === undefined) {
    writeResponse(res, response);
    return;
  }
  // Ended: the handler's own answer is on its way once stored. Detached: nobody is listening.
  if (state.ended || state.detached || res.destroyed) return;
  state.detached = true;
  if (res.headersSent) {
    // Part of the handler's response went out already: cut it, so the client retries.
    res.destroy();
    return;
  }
  const flat: string[] = [];
  for (const [name, value] of response.headers) flat.push(name, value);
  for (const name of res.getHeaderNames()) res.removeHeader(name);
  passOn(state, state.writeHead, res, [response.status, flat]);
  passOn(state, state.end, res, [response.body]);
}

function captureOf(res: ServerResponse): Capture | undefined {
  return SWAPPED.get(res) ?? (res as Partial<CapturedResponse>)[CAPTURE];
}

/** Gives `res` back its own methods. */
function uncapture(state: Capture, res: ServerResponse): void {
  if (state.onPrototype) {
    SWAPPED.delete(res);
    return;
  }
  res.writeHead = state.writeHead as ServerResponse['writeHead'];
  res.write = state.write as ServerResponse['write'];
  res.end = state.end as ServerResponse['end'];
}

function goneIfUnended(this: CapturedResponse): void {
  clientGone(this[CAPTURE]);
}

function goneIfUnendedSwapped(this: ServerResponse): void {
  const state = SWAPPED.get(this);
  if (state !== undefined) clientGone(state);
}

/**
 * The connection closed before the handler ended the response (the client hung up, or was
 * answered early). The work is not stopped: what the handler ends with is still stored.
 */
function clientGone(state: Capture): void {
  if (state.ended) return;
  state.detached = true;
  state.execution.clientGone();
}

/**
 * The response's headers as name/value pairs: those set with `setHeader`, overridden by those
 * passed to `writeHead` (as node:http merges them), names in lower case, one pair per value.
 */
function headerPairs(base: Record<string, unknown>, extra?: HeaderArg): [string, string][] {
  const pairs: [string, string][] = [];
  if (extra === undefined) {
    for (const name in base) pushPairs(pairs, name, base[name]);
    return pairs;
  }
  if (!Array.isArray(extra) && isEmpty(base)) {
    // The common writeHead(status, {…}) with nothing set before: no merge needed.
    for (const name in extra) pushPairs(pairs, name.toLowerCase(), (extra as Record<string, unknown>)[name]);
    return pairs;
  }
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
  } else {
    for (const name in extra) merged.set(name.toLowerCase(), (extra as Record<string, unknown>)[name]);
  }
  for (const [name, value] of merged) pushPairs(pairs, name, value);
  return pairs;
}

function isEmpty(record: Record<string, unknown>): boolean {
  for (const _ in record) return false;
  return true;
}

function pushPairs(pairs: [string, string][], name: string, value: unknown): void {
  if (value === undefined) return;
  if (Array.isArray(value)) for (const item of value) pairs.push([name, String(item)]);
  else pairs.push([name, String(value)]);
}
