import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino, { type Logger } from 'pino';
import { idempotent, writeResponse } from '../adapters/node.js';
import { parseDuration, retryAfterSeconds } from '../engine/duration.js';
import { createIdempotency } from '../engine/engine.js';
import { IdempotencyConfigError, IdempotencyUpstreamTimeoutError } from '../engine/errors.js';
import { pathOf } from '../engine/path.js';
import type { Duration, IdempotencyEvent, IdempotencyOptions, IdempotencyRequest } from '../engine/types.js';
import type { IdempotencyStore } from '../stores/contract.js';
import { IdempotencyGatewayDrainingError } from './errors.js';
import { createStoreHealth } from './health.js';
import { compilePathPatterns } from './path-patterns.js';
import { createProxy } from './proxy.js';
import { trackStore } from './store-activity.js';
import { type OpenedStore, openStore } from './store-url.js';

/** What a client that timed out or met a draining gateway is told to wait before its retry. */
const RETRY_AFTER_MS = 1_000;

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
   * How long a client waits for the upstream's response headers before it is answered
   * `504` (`IDEMPO_UPSTREAM_TIMEOUT`, with `Retry-After`). For a keyed request this answers the
   * client only: the upstream has the request, so the gateway keeps waiting (see
   * `upstreamDeadline`), keeps the key in flight, and stores the late answer for the retry.
   * @default '30s'
   */
  upstreamTimeout?: Duration;
  /**
   * How long the gateway waits in all for the upstream's answer to a keyed request, at least
   * `upstreamTimeout`. Past it the upstream request is aborted and the key is kept in flight until
   * its lease passes (never released: the upstream may have done the work); then a retry re-drives
   * it, marked with `Idempo-Redrive`.
   * @default '5m'
   */
  upstreamDeadline?: Duration;
  /**
   * How long a shutdown (SIGTERM, {@link Gateway.close}) waits for the work under way, upstream
   * requests already answered early included. What still runs at the deadline is handed over: its
   * keys stay in flight until their leases pass, and another instance then takes them over.
   * @default '30s'
   */
  drainTimeout?: Duration;
  /**
   * Path answered by the gateway itself with its health: `200 {"status":"ok","store":"ok"}`;
   * `503 {"status":"unavailable","store":"unreachable"}` while the store does not answer;
   * `503 {"status":"draining",…}` while shutting down.
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
  /**
   * Drains: answers `503` to new requests and to `/healthz`, waits for the work under way (up to
   * `drainTimeout`), hands over what is still running (keys kept in flight), then stops listening
   * and closes the store.
   */
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
  const upstreamDeadlineMs = parseDuration(options.upstreamDeadline ?? '5m', 'upstreamDeadline');
  if (upstreamDeadlineMs < upstreamTimeoutMs) {
    throw new IdempotencyConfigError(
      `--upstream-deadline (${upstreamDeadlineMs} ms) must be at least --upstream-timeout (${upstreamTimeoutMs} ms): the deadline is how long the gateway keeps waiting after answering 504.`,
    );
  }
  const drainTimeoutMs = parseDuration(options.drainTimeout ?? '30s', 'drainTimeout');
  const healthPath = options.healthPath ?? '/healthz';
  const requiresKey = compilePathPatterns(options.requireKey ?? []);
  const scopeHeader = options.scopeHeader?.toLowerCase();

  const opened: OpenedStore =
    typeof options.store === 'object'
      ? { store: options.store, description: 'custom', close: async () => {} }
      : await openStore(options.store ?? 'sqlite:./idempo.db');
  const tracked = trackStore(opened.store);
  const storeReachable = createStoreHealth(opened.store);

  const idem = createIdempotency({
    ...options.idempotency,
    store: tracked.store,
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

  const answer = (req: IncomingMessage, error: IdempotencyUpstreamTimeoutError | IdempotencyGatewayDrainingError) => {
    const response = idem.formatError(error, {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      header: () => undefined,
      body: async () => null,
    });
    response.headers.push(['retry-after', retryAfterSeconds(RETRY_AFTER_MS)]);
    return response;
  };
  const proxy = createProxy({
    upstream,
    timeoutMs: upstreamTimeoutMs,
    deadlineMs: upstreamDeadlineMs,
    timeoutResponse: (req) =>
      answer(
        req,
        new IdempotencyUpstreamTimeoutError(
          `The upstream took the request but did not answer within ${upstreamTimeoutMs} ms. It is still being waited for: retry with the same key to get its answer once it is stored.`,
        ),
      ),
  });
  const protectedProxy = idempotent(idem, proxy.listener);

  /** Requests whose response has not closed yet (a keyed one answered early may still work upstream). */
  let active = 0;
  let draining = false;
  const server = createServer((req, res) => {
    if (req.url === healthPath && (req.method === 'GET' || req.method === 'HEAD')) {
      void health(res);
      return;
    }
    if (draining) {
      // Nothing runs: the client retries elsewhere, on a new connection.
      writeResponse(
        res,
        answer(
          req,
          new IdempotencyGatewayDrainingError(
            'The gateway is shutting down; nothing was run. Retry on another instance.',
          ),
        ),
        true,
      );
      return;
    }
    active++;
    res.once('close', () => {
      active--;
    });
    protectedProxy(req, res);
  });

  async function health(res: ServerResponse): Promise<void> {
    const reachable = await storeReachable();
    const status = draining ? 'draining' : reachable ? 'ok' : 'unavailable';
    const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' };
    if (draining) headers.connection = 'close';
    res.writeHead(status === 'ok' ? 200 : 503, headers);
    res.end(JSON.stringify({ status, store: reachable ? 'ok' : 'unreachable' }));
  }

  if (!(await storeReachable())) {
    // Start anyway: keyed requests get 503 until the store is back (its client reconnects by itself).
    logger?.warn(
      { store: opened.description },
      `idempo store ${opened.description} is unreachable: keyed requests get 503 IDEMPO_STORE_UNAVAILABLE and /healthz 503 until it answers`,
    );
  }

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
  /** Work under way: requests not yet answered, upstream exchanges, store writes. */
  const busy = () => active > 0 || proxy.pending > 0 || tracked.pending() > 0;

  let closing: Promise<void> | undefined;
  return {
    url,
    port: address.port,
    server,
    close() {
      closing ??= (async () => {
        draining = true;
        logger?.info({ active, upstream: proxy.pending }, 'idempo gateway draining');
        // The listening socket and kept-alive connections stay open while the drain runs: a load
        // balancer's check gets 503 rather than a refused or reset connection, and every answer
        // from now on closes its connection, so clients move on to another instance.
        const deadline = Date.now() + drainTimeoutMs;
        while (busy() && Date.now() < deadline) await sleep(DRAIN_POLL_MS);
        if (busy()) {
          logger?.warn(
            { active, upstream: proxy.pending },
            'idempo gateway drain timed out: handing over the requests still under way (their keys stay in flight until their leases pass)',
          );
          proxy.handOver();
          const grace = Date.now() + HANDOVER_GRACE_MS;
          while ((proxy.pending > 0 || tracked.pending() > 0) && Date.now() < grace) await sleep(DRAIN_POLL_MS);
        }
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeAllConnections();
        await closed;
        await proxy.close();
        await opened.close();
        logger?.info('idempo gateway stopped');
      })();
      return closing;
    },
  };
}

/** How often a drain looks whether the work under way has finished. */
const DRAIN_POLL_MS = 20;
/** After a hand-over, how long the aborted exchanges get to settle before the store closes. */
const HANDOVER_GRACE_MS = 1_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
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
