import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Readable } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { bodyAlreadyRead } from '../adapters/node-body.js';
import { IdempotencyUpstreamError, IdempotencyUpstreamTimeoutError } from '../engine/errors.js';
import { HOP_BY_HOP } from '../engine/headers.js';

/** Options of {@link createProxy}. */
export interface ProxyOptions {
  /** Base URL of the upstream service, e.g. `http://127.0.0.1:3000`. */
  upstream: string;
  /** How long to wait for the upstream's response headers, in ms. */
  timeoutMs: number;
  /** Formats an idempo error response for the proxy's own answers (504 and the like). */
  writeError: (
    res: ServerResponse,
    req: IncomingMessage,
    error: IdempotencyUpstreamTimeoutError | IdempotencyUpstreamError,
  ) => void;
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

/**
 * A streaming reverse proxy to one upstream, as a node:http listener. An upstream it cannot reach
 * throws {@link IdempotencyUpstreamError} (the idempotency layer then releases the key: nothing
 * ran); an upstream that took the request and then failed or timed out is answered with a 502 or
 * 504 response, which follows `releaseOn` like any other response.
 */
export function createProxy(options: ProxyOptions) {
  const base = new URL(options.upstream);
  const origin = base.origin;
  const prefix = base.pathname.replace(/\/$/, '');
  const agent = new Agent({ keepAliveTimeout: 10_000, connections: 128, pipelining: 1 });

  async function proxy(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const headers: Record<string, string | string[]> = {};
    for (const name in req.headers) {
      const value = req.headers[name];
      // undici sets Host from the upstream's origin; the client's goes on as X-Forwarded-Host.
      if (value !== undefined && !HOP_BY_HOP.has(name) && name !== 'host') headers[name] = value;
    }
    const forwardedFor = req.headers['x-forwarded-for'];
    const remote = req.socket.remoteAddress ?? '';
    headers['x-forwarded-for'] = forwardedFor ? `${forwardedFor}, ${remote}` : remote;
    if (req.headers.host) headers['x-forwarded-host'] = req.headers.host;
    headers['x-forwarded-proto'] ??= 'http';
    const method = (req.method ?? 'GET') as Dispatcher.HttpMethod;
    const hasBody =
      method !== 'GET' &&
      method !== 'HEAD' &&
      (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined);

    let upstream: Dispatcher.ResponseData;
    try {
      upstream = await agent.request({
        origin,
        path: prefix + (req.url ?? '/'),
        method,
        headers,
        // The bytes idempo read to fingerprint the request go as they are; only an unread body streams.
        body: hasBody ? (bodyAlreadyRead(req) ?? req) : null,
        headersTimeout: options.timeoutMs,
        bodyTimeout: options.timeoutMs,
      });
    } catch (error) {
      const code = (error as { code?: string }).code ?? '';
      if (NOT_REACHED.has(code)) {
        throw new IdempotencyUpstreamError(
          `The upstream ${origin} could not be reached (${code}); nothing was sent. Retry later.`,
          {
            cause: error,
          },
        );
      }
      if (code === 'UND_ERR_HEADERS_TIMEOUT') {
        options.writeError(
          res,
          req,
          new IdempotencyUpstreamTimeoutError(
            `The upstream took the request but did not answer within ${options.timeoutMs} ms.`,
            {
              cause: error,
            },
          ),
        );
        return;
      }
      options.writeError(
        res,
        req,
        new IdempotencyUpstreamError(
          `The upstream connection failed after the request was sent (${code || 'error'}).`,
          {
            cause: error,
          },
        ),
      );
      return;
    }
    const outgoing: string[] = [];
    for (const name in upstream.headers) {
      if (HOP_BY_HOP.has(name)) continue;
      const value = upstream.headers[name];
      if (Array.isArray(value)) for (const item of value) outgoing.push(name, item);
      else if (value !== undefined) outgoing.push(name, value);
    }
    res.writeHead(upstream.statusCode, outgoing);
    forward(upstream.body, res);
  }

  return {
    listener: proxy,
    close: () => agent.close(),
  };
}

/**
 * Streams the upstream's body into `res`, which ends it (idempo holds that end until the response
 * is stored). An upstream body that fails destroys `res`, so the response never ends and idempo
 * releases the key; a client that goes away destroys the upstream body, freeing its connection.
 * pipe(), not pipeline(): on Node 20 pipeline() makes an AbortController per call and a
 * DOMException with a stack when it finishes, about a tenth of the gateway's CPU per request.
 */
function forward(body: Readable, res: ServerResponse): void {
  body.on('error', (error) => res.destroy(error));
  res.on('close', () => {
    if (!body.readableEnded) body.destroy();
  });
  body.pipe(res);
}
