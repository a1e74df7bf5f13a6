import { EventEmitter } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { idempotencyContext, respondEarly, writeResponse } from '../adapters/node.js';
import { bodyAlreadyRead } from '../adapters/node-body.js';
import { HOP_BY_HOP } from '../engine/headers.js';
import type { IdempotencyContext, IdempotencyResponse } from '../engine/types.js';
import {
  IdempotencyUpstreamFailedError,
  IdempotencyUpstreamTimeoutError,
  IdempotencyUpstreamUnreachableError,
} from '../vocabulary/index.js';

/**
 * The request header the gateway adds when it forwards a request whose earlier owner crashed or
 * stalled past its lease (a re-drive): its value is the new fencing token. The earlier attempt may
 * have reached the upstream and done the work, which no proxy can know, so an upstream that must
 * not act twice looks the `Idempotency-Key` up (a unique constraint) when this header is present.
 * A client can never send it: the gateway drops it from every incoming request.
 *
 * @example
 * ```ts
 * import type { IncomingMessage } from 'node:http';
 * import { REDRIVE_HEADER } from 'idempo/gateway';
 *
 * // In the upstream: a re-drive of a payment already made answers with that payment.
 * function alreadyMade(req: IncomingMessage, payments: Map<string, { id: string }>) {
 *   const key = req.headers['idempotency-key'];
 *   return req.headers[REDRIVE_HEADER] !== undefined && typeof key === 'string' ? payments.get(key) : undefined;
 * }
 * ```
 */
export const REDRIVE_HEADER = 'idempo-redrive' as const;

/** How long a client is told to wait before it retries after any of the gateway's upstream errors. */
export const RETRY_AFTER_MS = 1_000;

/** The header that carries the key to the upstream, whatever header the client used. */
const KEY_HEADER = 'idempotency-key';

/** Options of {@link createProxy}. */
export interface ProxyOptions {
  /** Base URL of the upstream service, e.g. `http://127.0.0.1:3000`. */
  upstream: string;
  /** How long the client waits for the upstream's response headers before it is answered 504, in ms. */
  timeoutMs: number;
  /**
   * How long a keyed request may take upstream in all, in ms (at least `timeoutMs`). Past the
   * timeout the client has its 504 but the gateway keeps waiting, to store the late answer; past
   * this deadline it gives up and leaves the key in flight until its lease passes.
   */
  deadlineMs: number;
  /** The 504 a client gets when the upstream has not answered within `timeoutMs`. */
  timeoutResponse: (req: IncomingMessage) => IdempotencyResponse;
  /** Writes a keyed request's trace context (`traceparent`) into the headers sent upstream, when tracing. */
  traceHeaders?: ((context: IdempotencyContext, headers: Record<string, string>) => void) | undefined;
}

/** Errors raised before the upstream could have seen the request: nothing happened there. */
const NOT_REACHED = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** undici's refusals of a request before it sends anything (a header or body it will not send). */
const NOT_SENT = new Set(['UND_ERR_INVALID_ARG', 'UND_ERR_NOT_SUPPORTED']);

/**
 * Request headers never forwarded besides the hop-by-hop ones: Host (undici sets the upstream's),
 * the re-drive marker (only the gateway may set it), Expect (answered per hop by the gateway),
 * and the ones the gateway writes itself.
 */
const DROPPED = new Set(['host', REDRIVE_HEADER, 'expect', 'forwarded', 'via', 'x-forwarded-for', 'x-forwarded-host']);

/** Header names a Connection header lists (RFC 9110 §7.6.1): they describe this hop, not the message. */
function connectionOptions(connection: string | undefined): Set<string> | undefined {
  if (connection === undefined) return undefined;
  const names = new Set<string>();
  for (const item of connection.split(',')) {
    const name = item.trim().toLowerCase();
    if (name !== '' && name !== 'close' && name !== 'keep-alive') names.add(name);
  }
  return names.size === 0 ? undefined : names;
}

/** One RFC 7239 `Forwarded` element for this hop; values that are not tokens are quoted (IPv6, host:port). */
function forwardedElement(remote: string, host: string | undefined): string {
  const quote = (value: string) => (/^[A-Za-z0-9!#$%&'*+.^_`|~-]+$/.test(value) ? value : JSON.stringify(value));
  const node = remote.includes(':') ? `[${remote}]` : remote || 'unknown';
  let element = `for=${quote(node)}`;
  if (host) element += `;host=${quote(host)}`;
  return `${element};proto=http`;
}

/** Why the gateway itself cut an upstream exchange short. */
type Cut = 'timeout' | 'deadline' | 'client_gone' | 'handover';

/** A proxy made by {@link createProxy}. */
export interface Proxy {
  /** The node:http listener; its promise settles once the upstream's answer is written whole (or failed). */
  listener(req: IncomingMessage, res: ServerResponse): Promise<void>;
  /** Upstream exchanges still under way, those whose client was already answered included. */
  readonly pending: number;
  /**
   * Gives up every exchange still under way (the drain deadline at shutdown). Keyed ones fail with
   * an unknown outcome, so their keys stay in flight until their leases pass and another instance
   * takes them over: the upstream may still be doing the work.
   */
  handOver(): void;
  /** Closes the upstream connections. */
  close(): Promise<void>;
}

/**
 * A streaming reverse proxy to one upstream, as a node:http listener, written for "never twice":
 *
 * - An upstream it cannot reach throws {@link IdempotencyUpstreamUnreachableError}: nothing ran there, so
 *   the key is released.
 * - An upstream that has the request but fails (a reset, a hang-up, a body cut short) throws
 *   {@link IdempotencyUpstreamFailedError}, an unknown outcome: the key is kept in flight.
 * - An upstream slower than `timeoutMs` gets its client answered 504 early, while the gateway
 *   keeps waiting up to `deadlineMs` and stores the late answer; the listener's promise stays
 *   pending meanwhile, which keeps the lease renewed. Past the deadline it throws
 *   {@link IdempotencyUpstreamTimeoutError}: the key is kept until its lease passes.
 * - A client that goes away does not stop a keyed exchange: the answer is read whole and written
 *   into the (captured) response, which stores it for the retry.
 *
 * A request without a key (nothing to store) is cut at `timeoutMs`, or when its client leaves.
 */
export function createProxy(options: ProxyOptions): Proxy {
  const base = new URL(options.upstream);
  const origin = base.origin;
  const prefix = base.pathname.replace(/\/$/, '');
  const agent = new Agent({ keepAliveTimeout: 10_000, connections: 128, pipelining: 1 });
  const exchanges = new Set<Exchange>();

  async function proxy(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const context = idempotencyContext(req);
    const headers: Record<string, string | string[]> = {};
    const perHop = connectionOptions(req.headers.connection);
    for (const name in req.headers) {
      const value = req.headers[name];
      // undici sets Host from the upstream's origin; the client's goes on as X-Forwarded-Host.
      // A client-sent re-drive marker is dropped: only the gateway may say a request is a re-drive.
      // Expect is per hop: the gateway answered the client's 100-continue itself (see server.ts).
      if (
        value !== undefined &&
        !HOP_BY_HOP.has(name) &&
        !DROPPED.has(name) &&
        (perHop === undefined || !perHop.has(name))
      )
        headers[name] = value;
    }
    const remote = req.socket.remoteAddress ?? '';
    const forwardedFor = req.headers['x-forwarded-for'];
    headers['x-forwarded-for'] = forwardedFor ? `${forwardedFor}, ${remote}` : remote;
    if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
    headers['x-forwarded-proto'] ??= 'http';
    // RFC 7239: this hop appended to what earlier proxies said (the upstream should trust only the
    // entries its own proxies added, from the right).
    const hop = forwardedElement(remote, req.headers.host);
    const forwarded = req.headers.forwarded;
    headers.forwarded = forwarded ? `${forwarded}, ${hop}` : hop;
    // RFC 9110 §7.6.3: a gateway MUST add Via to the requests it forwards (a pseudonym, no host).
    const via = req.headers.via;
    const ours = `${req.httpVersion} idempo`;
    headers.via = via ? `${via}, ${ours}` : ours;
    if (context !== undefined) {
      // The upstream deduplicates on the key idempo used, whatever header the client sent it in.
      headers[KEY_HEADER] = context.key;
      if (context.recovered) headers[REDRIVE_HEADER] = String(context.token);
      options.traceHeaders?.(context, headers as Record<string, string>);
    }
    const method = (req.method ?? 'GET') as Dispatcher.HttpMethod;
    const hasBody =
      method !== 'GET' &&
      method !== 'HEAD' &&
      (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined);

    const exchange = new Exchange(context !== undefined);
    exchanges.add(exchange);
    const answerTimer = setTimeout(() => {
      if (exchange.keyed) {
        // The upstream has the request: answer the client, keep the key in flight and keep waiting.
        respondEarly(res, options.timeoutResponse(req));
      } else {
        exchange.cut('timeout');
      }
    }, options.timeoutMs);
    const deadlineTimer = exchange.keyed ? setTimeout(() => exchange.cut('deadline'), options.deadlineMs) : undefined;
    const onClose = () => {
      if (!exchange.keyed && !res.writableFinished) exchange.cut('client_gone');
    };
    res.once('close', onClose);
    try {
      let upstream: Dispatcher.ResponseData;
      try {
        upstream = await agent.request({
          origin,
          path: prefix + (req.url ?? '/'),
          method,
          headers,
          // The bytes idempo read to fingerprint the request go as they are; only an unread body streams.
          body: hasBody ? (bodyAlreadyRead(req) ?? req) : null,
          // The gateway's own timers decide (answer, deadline); undici's would end the exchange.
          headersTimeout: 0,
          bodyTimeout: 0,
          signal: exchange.signal,
        });
      } catch (error) {
        clearTimeout(answerTimer);
        if (exchange.reason === undefined) {
          const code = (error as { code?: string }).code ?? '';
          if (NOT_REACHED.has(code)) {
            throw new IdempotencyUpstreamUnreachableError(
              `The upstream ${origin} could not be reached (${code}); nothing was sent. Retry later.`,
              { cause: error, retryAfterMs: RETRY_AFTER_MS },
            );
          }
          if (NOT_SENT.has(code)) {
            throw new IdempotencyUpstreamUnreachableError(
              `The gateway could not forward the request (${code}: ${(error as Error).message}); nothing was sent.`,
              { cause: error, retryAfterMs: RETRY_AFTER_MS },
            );
          }
        }
        return failed(exchange, error, req, res, options);
      }
      clearTimeout(answerTimer);
      const outgoing: string[] = [];
      for (const name in upstream.headers) {
        if (HOP_BY_HOP.has(name)) continue;
        const value = upstream.headers[name];
        if (Array.isArray(value)) for (const item of value) outgoing.push(name, item);
        else if (value !== undefined) outgoing.push(name, value);
      }
      // After an early 504 (or a hang-up) the capture keeps this without sending it: stored, not sent.
      res.writeHead(upstream.statusCode, outgoing);
      try {
        await forward(upstream.body, res, exchange);
      } catch (error) {
        return failed(exchange, error, req, res, options);
      }
    } finally {
      clearTimeout(answerTimer);
      clearTimeout(deadlineTimer);
      res.off('close', onClose);
      exchanges.delete(exchange);
    }
  }

  return {
    listener: proxy,
    get pending() {
      return exchanges.size;
    },
    handOver() {
      for (const exchange of exchanges) exchange.cut('handover');
    },
    close: () => agent.close(),
  };
}

/**
 * What undici watches to abort an exchange: an EventEmitter with `aborted` and `reason`, which
 * undici takes in place of an AbortSignal. Node 20 builds an AbortController and its signal on the
 * DOM EventTarget machinery, about 3% of the gateway's CPU per request in a profile, for an abort
 * that almost never happens.
 */
class CutSignal extends EventEmitter {
  aborted = false;
  reason: Error | undefined;
}

/** One request's trip upstream, and why the gateway cut it short, if it did. */
class Exchange {
  readonly keyed: boolean;
  reason: Cut | undefined;
  readonly signal = new CutSignal();

  constructor(keyed: boolean) {
    this.keyed = keyed;
  }

  cut(reason: Cut): void {
    if (this.reason !== undefined) return;
    this.reason = reason;
    this.signal.aborted = true;
    this.signal.reason = new Error(`idempo gateway: upstream exchange cut (${reason})`);
    this.signal.emit('abort');
  }
}

/**
 * After the upstream had the request, any failure is an unknown outcome for a keyed request: the
 * error thrown keeps its key in flight (never released). A request without a key gets its 504, or
 * nothing at all once its client has gone.
 */
function failed(
  exchange: Exchange,
  error: unknown,
  req: IncomingMessage,
  res: ServerResponse,
  options: ProxyOptions,
): void {
  switch (exchange.reason) {
    case 'client_gone':
      return;
    case 'timeout':
      writeResponse(res, options.timeoutResponse(req));
      return;
    case 'deadline':
      throw new IdempotencyUpstreamTimeoutError(
        `The upstream took the request but did not answer within the gateway's deadline of ${options.deadlineMs} ms; it may still have done the work, so the key is kept until its lease passes.`,
        { cause: error, retryAfterMs: RETRY_AFTER_MS },
      );
    case 'handover':
      throw new IdempotencyUpstreamTimeoutError(
        'The gateway shut down while the upstream still had the request; it may have done the work, so the key is kept until its lease passes and another instance takes it over.',
        { cause: error, retryAfterMs: RETRY_AFTER_MS },
      );
    default: {
      const code = (error as { code?: string }).code;
      throw new IdempotencyUpstreamFailedError(
        `The upstream connection failed after the request was sent (${code ?? 'error'}); it may have done the work, so the key is kept until its lease passes.`,
        { cause: error, retryAfterMs: RETRY_AFTER_MS },
      );
    }
  }
}

/**
 * Streams the upstream's body into `res`, and ends it (idempo holds that end until the response is
 * stored). For a keyed request the body is read whole even after the client went away: the
 * capture keeps what is written (up to maxResponseBytes) without sending it, and its end stores
 * the answer for the retry. Backpressure follows the client while it is there. Without a key, a
 * client that leaves ends the exchange (see onClose above), which settles this as done.
 * Events rather than pipe() or pipeline(): pipe() stops at a closed destination, and on Node 20
 * pipeline() makes an AbortController and a DOMException per call, about a tenth of the CPU.
 */
function forward(body: Readable, res: ServerResponse, exchange: Exchange): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let paused = false;
    const resume = () => {
      if (!paused) return;
      paused = false;
      body.resume();
    };
    const settle = () => {
      res.off('drain', resume);
      res.off('close', resume);
    };
    body.on('data', (chunk: Buffer) => {
      if (res.write(chunk) === false && !res.destroyed) {
        paused = true;
        body.pause();
      }
    });
    res.on('drain', resume);
    // Once the client is gone the capture takes every write at once: read on.
    res.on('close', resume);
    body.once('end', () => {
      settle();
      res.end();
      resolve();
    });
    body.once('error', (error) => {
      settle();
      reject(error);
    });
    body.once('close', () => {
      settle();
      // Destroyed without an error: cut by the gateway for a client that left (no key).
      if (!body.readableEnded && exchange.reason !== undefined) resolve();
    });
  });
}
