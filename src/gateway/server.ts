import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { idempotent, writeResponse } from '../adapters/node.js';
import { parseDuration } from '../engine/duration.js';
import { createIdempotency } from '../engine/engine.js';
import { IdempotencyConfigError, type IdempotencyError } from '../engine/errors.js';
import { pathOf } from '../engine/path.js';
import type { Duration, IdempotencyEvent, IdempotencyOptions, IdempotencyRequest } from '../engine/types.js';
import type { IdempotencyStore } from '../stores/contract.js';
import { compilePathPatterns } from './path-patterns.js';
import { createProxy } from './proxy.js';
import { type OpenedStore, openStore } from './store-url.js';

/** Options of {@link startGateway}; the CLI's flags map onto these one to one. */
export interface GatewayOptions {
  /** The upstream service's base URL, e.g. `http://127.0.0.1:3000`. */
  upstream: string;
  /**
   * Port to listen on; `0` picks a free one.
   * @default 8080
   */
  port?: number;
  /**
   * Interface to listen on. Use `0.0.0.0` in a container.
   * @default '127.0.0.1'
   */
  host?: string;
  /**
   * A store URL (`memory:`, `sqlite:PATH`, `redis://…`, `postgres://…`) or a store object.
   * @default 'sqlite:./idempo.db'
   */
  store?: string | IdempotencyStore;
  /**
   * Methods that take part.
   * @default ['POST', 'PATCH']
   */
  methods?: readonly string[];
  /**
   * Path patterns whose requests must carry a key (`*` matches one path segment, `**` any number).
   * @default [] (keys optional everywhere)
   */
  requireKey?: readonly string[];
  /**
   * A request header whose value namespaces keys (e.g. `x-tenant-id`), so tenants never share one.
   * @default none
   */
  scopeHeader?: string;
  /** @default '24h' */
  ttl?: Duration;
  /** @default '60s' */
  lease?: Duration;
  /**
   * How long to wait for the upstream's response headers before answering 504.
   * @default '30s'
   */
  upstreamTimeout?: Duration;
  /**
   * How long SIGTERM waits for in-flight requests before closing their connections.
   * @default '30s'
   */
  drainTimeout?: Duration;
  /**
   * Path answered by the gateway itself with its health.
   * @default '/healthz'
   */
  healthPath?: string;
  /**
   * A pino logger, or `false` for none.
   * @default pino at level `LOG_LEVEL` or `info`, to stdout (asynchronous writes, flushed at exit)
   */
  logger?: Logger | false;
  /** Any other engine option (`concurrent`, `releaseOn`, `maxBodyBytes`, `errorFormat`, …). */
  idempotency?: Omit<Partial<IdempotencyOptions>, 'store'>;
}

/** A running gateway. */
export interface Gateway {
  /** `http://host:port` the gateway listens on. */
  readonly url: string;
  readonly port: number;
  readonly server: Server;
  /** Stops accepting, drains in-flight requests (up to `drainTimeout`), then closes the store. */
  close(): Promise<void>;
}

/**
 * Starts the idempo gateway: a reverse proxy that gives an upstream HTTP service, in any
 * language, idempotency keys with no code change.
 *
 * @example
 * ```ts
 * import { startGateway } from 'idempo/gateway';
 * const gateway = await startGateway({ upstream: 'http://127.0.0.1:3000', port: 8080, store: 'sqlite:./idempo.db' });
 * // … later
 * await gateway.close();
 * ```
 */
export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const upstream = checkUpstream(options.upstream);
  const logger = options.logger === false ? undefined : (options.logger ?? defaultLogger());
  const upstreamTimeoutMs = parseDuration(options.upstreamTimeout ?? '30s', 'upstreamTimeout');
  const drainTimeoutMs = parseDuration(options.drainTimeout ?? '30s', 'drainTimeout');
  const healthPath = options.healthPath ?? '/healthz';
  const requiresKey = compilePathPatterns(options.requireKey ?? []);
  const scopeHeader = options.scopeHeader?.toLowerCase();

  const opened: OpenedStore =
    typeof options.store === 'object'
      ? { store: options.store, description: 'custom', close: async () => {} }
      : await openStore(options.store ?? 'sqlite:./idempo.db');

  const idem = createIdempotency({
    ...options.idempotency,
    store: opened.store,
    ...(options.methods ? { methods: options.methods } : {}),
    ...(options.ttl !== undefined ? { ttl: options.ttl } : {}),
    ...(options.lease !== undefined ? { lease: options.lease } : {}),
    required: options.idempotency?.required ?? ((request: IdempotencyRequest) => requiresKey(pathOf(request.url))),
    ...(scopeHeader ? { scope: (request: IdempotencyRequest) => request.header(scopeHeader) } : {}),
    onEvent: (event) => {
      if (logger) logEvent(logger, event);
      options.idempotency?.onEvent?.(event);
    },
  });

  const proxy = createProxy({
    upstream,
    timeoutMs: upstreamTimeoutMs,
    writeError: (res: ServerResponse, req: IncomingMessage, error: IdempotencyError) =>
      writeResponse(
        res,
        idem.formatError(error, {
          method: req.method ?? 'GET',
          url: req.url ?? '/',
          header: () => undefined,
          body: async () => null,
        }),
      ),
  });
  const protectedProxy = idempotent(idem, proxy.listener);

  let active = 0;
  let draining = false;
  const server = createServer((req, res) => {
    if (req.url === healthPath && (req.method === 'GET' || req.method === 'HEAD')) {
      res.writeHead(draining ? 503 : 200, { 'content-type': 'application/json', 'cache-control': 'no-store' });
      res.end(draining ? '{"status":"draining"}' : '{"status":"ok"}');
      return;
    }
    active++;
    res.once('close', () => {
      active--;
      if (draining && active === 0) server.closeAllConnections();
    });
    protectedProxy(req, res);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8080, options.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger?.info({ url, upstream, store: opened.description }, 'idempo gateway listening');

  let closing: Promise<void> | undefined;
  return {
    url,
    port: address.port,
    server,
    close() {
      closing ??= (async () => {
        draining = true;
        logger?.info({ active }, 'idempo gateway draining');
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        if (active === 0) server.closeAllConnections();
        const timer = setTimeout(() => server.closeAllConnections(), drainTimeoutMs);
        await closed;
        clearTimeout(timer);
        await proxy.close();
        await opened.close();
        logger?.info('idempo gateway stopped');
      })();
      return closing;
    },
  };
}

function checkUpstream(upstream: string | undefined): string {
  if (!upstream)
    throw new IdempotencyConfigError(
      '--upstream is required: the base URL of the service to protect, e.g. http://127.0.0.1:3000',
    );
  let url: URL;
  try {
    url = new URL(upstream);
  } catch {
    throw new IdempotencyConfigError(
      `--upstream: ${JSON.stringify(upstream)} is not a URL; expected e.g. http://127.0.0.1:3000`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new IdempotencyConfigError(`--upstream: expected an http:// or https:// URL, got ${url.protocol}`);
  }
  return upstream;
}

/**
 * pino at `LOG_LEVEL` (default `info`) to stdout, written asynchronously: a synchronous write
 * per line cost the gateway tens of µs per request at info level. Lines written while a write is
 * under way go out together; pino flushes what is left when the process exits.
 */
function defaultLogger(): Logger {
  return pino({ level: process.env.LOG_LEVEL ?? 'info' }, pino.destination({ dest: 1, sync: false }));
}

function logEvent(logger: Logger, event: IdempotencyEvent): void {
  const level =
    event.type === 'store_error'
      ? 'error'
      : event.type === 'lease_lost' || event.type === 'recovered'
        ? 'warn'
        : 'info';
  // Most events are info lines: below that level there is nothing to build.
  if (!logger.isLevelEnabled(level)) return;
  const { error, ...fields } = event;
  logger[level](error === undefined ? fields : { ...fields, err: error }, `idempotency ${event.type}`);
}
