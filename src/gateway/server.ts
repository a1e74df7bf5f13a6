import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Logger } from 'pino';
import { idempotent, writeResponse } from '../adapters/node.js';
import { IDEMPOTENCY_DEFAULTS } from '../engine/defaults.js';
import { createIdempotency } from '../engine/engine.js';
import { pathOf } from '../engine/path.js';
import { problemFormatter, stripeFormatter } from '../engine/problem.js';
import type {
  ErrorFormatter,
  IdempotencyEvent,
  IdempotencyOptions,
  IdempotencyRequest,
  LimitOptions,
} from '../engine/types.js';
import { type EncryptionOptions, encryptStore } from '../stores/encrypted.js';
import {
  type Duration,
  IdempotencyConfigInvalidError,
  type IdempotencyError,
  IdempotencyGatewayDrainingError,
  type IdempotencyStore,
  IdempotencyUpstreamTimeoutError,
  parseDuration,
} from '../vocabulary/index.js';
import { startAdmin } from './admin.js';
import { adminPageRoutes } from './admin-page.js';
import { lingerBeforeClose, readingRequest } from './connections.js';
import { GATEWAY_DEFAULTS } from './defaults.js';
import { createStoreStatus } from './health.js';
import { createGatewayLogger, roundMs } from './log.js';
import { type GatewayUsageOptions, gatewayObservability } from './observability.js';
import type { OpenedStore } from './opened-store.js';
import { compilePathPatterns } from './path-patterns.js';
import { createProxy, RETRY_AFTER_MS } from './proxy.js';
import { trackStore } from './store-activity.js';
import { openStore } from './store-url.js';

/** What a client that timed out or met a draining gateway is told to wait before its retry. */

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
   * How long a client may take to send a request's headers; past it the gateway answers `408`
   * and closes the connection (slowloris).
   * @default '20s'
   */
  headersTimeout?: Duration;
  /**
   * How long a client may take to send a whole request, body included; past it `408` and the
   * connection is closed. Large uploads on slow links need more; `0` turns it off.
   * @default '5m'
   */
  requestTimeout?: Duration | 0;
  /**
   * How long an idle kept-alive client connection stays open. Behind a load balancer, make it
   * longer than the balancer's own idle timeout (AWS ALB: 60 s), so the gateway never closes a
   * connection the balancer is about to reuse.
   * @default '65s'
   */
  keepAliveTimeout?: Duration;
  /**
   * PostgreSQL: run the schema migration at start. Without it a database without idempo's schema
   * stops the start with `IDEMPO_STORE_NOT_MIGRATED` and the command to run. SQLite: move a table
   * an earlier version made to the current layout at start; without it that table is served as
   * it is, and the gateway logs a warning with the command that moves it.
   * @default false
   */
  migrate?: boolean;
  /**
   * Path answered by the gateway itself with its health: `200 {"status":"ok","store":"ok"}`;
   * `503 {"status":"unavailable","store":"unreachable"|"not_migrated"}` while the store does not
   * answer or lacks its schema; `503 {"status":"draining",…}` while shutting down.
   * @default '/healthz'
   */
  healthPath?: string;
  /**
   * A pino logger, or `false` for none.
   * @default pino at level `LOG_LEVEL` or `info`, to stdout (asynchronous writes, flushed at exit), in `logFormat`
   */
  logger?: Logger | false;
  /**
   * The default logger's format: `json` (one object a line) or `pretty` (one readable line).
   * @default `IDEMPO_LOG_FORMAT` or `'json'`
   */
  logFormat?: 'json' | 'pretty';
  /**
   * Port of the admin listener, which serves `GET /metrics` (Prometheus) and `GET /usage` (key
   * usage per scope) off the proxied namespace; `0` picks a free one.
   * @default none (no admin listener)
   */
  adminPort?: number;
  /**
   * Interface of the admin listener. Keep it private: it tells who uses which keys.
   * @default '127.0.0.1'
   */
  adminHost?: string;
  /**
   * The bearer token the admin page's key routes (records, purge) require. Without one they are
   * off (`403`); `/metrics`, `/usage` and the page itself never need it.
   * @default none (key routes off)
   */
  adminToken?: string;
  /**
   * Key usage per scope (the `--scope-header` value, else the client's address), served at
   * `GET /usage` and as metrics: the window, how many scopes are tracked, and the counts at which
   * a scope is logged (`warn`).
   * @default { window: '5m', maxScopes: 10000, topN: 10, thresholds: { mismatches: 20, invalid_keys: 50 } }
   */
  usage?: GatewayUsageOptions;
  /**
   * Any other engine option: `concurrent`, `releaseOn`, `maxBodyBytes`, `maxResponseBytes`,
   * `mismatchStatus`, `errorFormat`, `completeTimeout`, `waitTimeout`, `header`, … (see
   * `IdempotencyOptions`). The gateway's own `methods`, `ttl`, `lease` and `requireKey` win
   * over the same options given here.
   */
  idempotency?: Omit<Partial<IdempotencyOptions>, 'store'>;
  /**
   * Encryption at rest (`idempo/encryption`): the store is wrapped with `encryptStore` under these
   * keys, so responses and steps are sealed and fingerprints keyed (CLI: `--encryption-keys`).
   * @default none (records kept as they are)
   */
  encryption?: EncryptionOptions;
  /**
   * Per-scope limits (`limits` of the engine; CLI: `--limit-in-flight`, `--limit-new-keys`,
   * `--limit-scopes`): a scope is the `scopeHeader` value, else the client's address. A request
   * over a limit gets `429` with `Retry-After` before anything is claimed or sent upstream. Kept in
   * this process: with N gateways a scope gets N times the limits.
   * @default none (no limits)
   */
  limits?: LimitOptions;
}

/** A running gateway. */
export interface Gateway {
  /** `http://host:port` the gateway listens on. */
  readonly url: string;
  /** `http://host:port` of the admin listener, when `adminPort` is set. */
  readonly adminUrl: string | undefined;
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
  const logger =
    options.logger === false
      ? undefined
      : (options.logger ?? createGatewayLogger(options.logFormat ? { format: options.logFormat } : {}));
  const headersTimeoutMs = parseDuration(options.headersTimeout ?? GATEWAY_DEFAULTS.headersTimeout, 'headersTimeout');
  const requestTimeoutMs =
    options.requestTimeout === 0
      ? 0
      : parseDuration(options.requestTimeout ?? GATEWAY_DEFAULTS.requestTimeout, 'requestTimeout');
  const keepAliveTimeoutMs = parseDuration(
    options.keepAliveTimeout ?? GATEWAY_DEFAULTS.keepAliveTimeout,
    'keepAliveTimeout',
  );
  const upstreamTimeoutMs = parseDuration(
    options.upstreamTimeout ?? GATEWAY_DEFAULTS.upstreamTimeout,
    'upstreamTimeout',
  );
  const upstreamDeadlineMs = parseDuration(
    options.upstreamDeadline ?? GATEWAY_DEFAULTS.upstreamDeadline,
    'upstreamDeadline',
  );
  if (upstreamDeadlineMs < upstreamTimeoutMs) {
    throw new IdempotencyConfigInvalidError(
      `--upstream-deadline (${upstreamDeadlineMs} ms) must be at least --upstream-timeout (${upstreamTimeoutMs} ms): the deadline is how long the gateway keeps waiting after answering 504.`,
    );
  }
  const drainTimeoutMs = parseDuration(options.drainTimeout ?? GATEWAY_DEFAULTS.drainTimeout, 'drainTimeout');
  const healthPath = options.healthPath ?? GATEWAY_DEFAULTS.healthPath;
  const requiresKey = compilePathPatterns(options.requireKey ?? []);
  const scopeHeader = options.scopeHeader?.toLowerCase();

  const methods = new Set(
    (options.methods ?? options.idempotency?.methods ?? IDEMPOTENCY_DEFAULTS.methods).map((m) => m.toUpperCase()),
  );
  const keyHeader = (options.idempotency?.header ?? IDEMPOTENCY_DEFAULTS.header).toLowerCase();
  const formatter = gatewayFormatter(
    options.idempotency?.errorFormat ?? IDEMPOTENCY_DEFAULTS.errorFormat,
    logger,
    keyHeader,
  );

  const opened: OpenedStore =
    typeof options.store === 'object'
      ? { store: options.store, description: 'custom', close: async () => {} }
      : await openStore(options.store ?? GATEWAY_DEFAULTS.store, { migrate: options.migrate === true });
  for (const notice of opened.notices ?? []) logger?.[notice.level]({ store: opened.description }, notice.message);
  // Sealing sits directly on the store, under everything that watches it, so watchers see plaintext.
  const store = options.encryption ? encryptStore(opened.store, options.encryption) : opened.store;
  const tracked = trackStore(store);
  const observability = await gatewayObservability({
    admin: options.adminPort !== undefined,
    storeName: storeNameOf(options.store),
    scopeHeader,
    usage: options.usage,
    routes: options.requireKey ?? [],
    logger,
  }).catch(async (error: unknown) => {
    await opened.close().catch(() => {});
    throw error;
  });
  const storeStatus = createStoreStatus(opened.store, opened.check?.bind(opened));

  const idem = createIdempotency({
    ...options.idempotency,
    errorFormat: formatter,
    store: tracked.store,
    ...(options.methods ? { methods: options.methods } : {}),
    ...(options.ttl !== undefined ? { ttl: options.ttl } : {}),
    ...(options.lease !== undefined ? { lease: options.lease } : {}),
    required: options.idempotency?.required ?? ((request: IdempotencyRequest) => requiresKey(pathOf(request.url))),
    ...(scopeHeader ? { scope: (request: IdempotencyRequest) => request.header(scopeHeader) } : {}),
    ...(options.limits ? { limits: options.limits } : {}),
    onEvent: (event) => {
      if (logger) logEvent(logger, event);
      options.idempotency?.onEvent?.(event);
    },
    observe: [...[options.idempotency?.observe ?? []].flat(), ...observability.observers],
  });

  const answer = (req: IncomingMessage, error: IdempotencyError) =>
    idem.formatError(error, {
      method: req.method ?? 'GET',
      url: req.url ?? '/',
      header: () => undefined,
      body: async () => null,
    });
  const proxy = createProxy({
    upstream,
    timeoutMs: upstreamTimeoutMs,
    deadlineMs: upstreamDeadlineMs,
    timeoutResponse: (req) =>
      answer(
        req,
        new IdempotencyUpstreamTimeoutError(
          `The upstream took the request but did not answer within ${upstreamTimeoutMs} ms. It is still being waited for: retry with the same key to get its answer once it is stored.`,
          { retryAfterMs: RETRY_AFTER_MS },
        ),
      ),
    traceHeaders: observability.traceHeaders,
  });
  const protectedProxy = idempotent(idem, proxy.listener);

  /** Requests whose response has not closed yet (a keyed one answered early may still work upstream). */
  let active = 0;
  let draining = false;
  const server = createServer(
    {
      headersTimeout: headersTimeoutMs,
      requestTimeout: requestTimeoutMs,
      keepAliveTimeout: keepAliveTimeoutMs,
      // node:http looks for timed-out requests only this often (30 s by default).
      connectionsCheckingInterval: Math.min(
        1_000,
        Math.max(50, Math.floor(Math.min(headersTimeoutMs, requestTimeoutMs || headersTimeoutMs) / 4)),
      ),
    },
    handle,
  );
  // node:http never makes headersTimeout longer than requestTimeout by itself; with requestTimeout off it must be set.
  server.headersTimeout = headersTimeoutMs;
  lingerBeforeClose(server);

  function handle(req: IncomingMessage, res: ServerResponse): void {
    readingRequest(req);
    const target = req.url ?? '/';
    if (target[0] !== '/' && !originForm(req, res, target)) return;
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
            { retryAfterMs: RETRY_AFTER_MS },
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
  }

  /**
   * `Expect: 100-continue` (curl sends it on its own for bodies over 1 MiB). The gateway answers
   * it itself, hop by hop: `100 Continue` at once, unless it will refuse the request for its body
   * alone (a keyed request whose Content-Length is over maxBodyBytes), which gets its `413`
   * without the body ever being sent.
   */
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const length = Number(req.headers['content-length']);
    const refused =
      methods.has(req.method ?? '') && req.headers[keyHeader] !== undefined && length > idem.limits.maxBodyBytes;
    if (!refused && !draining) res.writeContinue();
    handle(req, res);
  });

  /** Requests node:http itself refuses (malformed, headers too large, too slow): answered, closed and logged. */
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Socket) => {
    const code = error.code ?? 'ERR';
    const inProgress = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (inProgress?.req?.complete && !inProgress.writableFinished && socket.writable) {
      // A request pipelined behind one still being answered is malformed. A client reads the
      // answers in order: a 400 now would read as the answer to the earlier request (which did
      // go upstream). Finish that answer, then close; the malformed one gets none.
      inProgress.shouldKeepAlive = false;
      const close = () => socket.destroy();
      inProgress.once('finish', close);
      inProgress.once('close', close);
      return;
    }
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable || inProgress?.headersSent) {
      socket.destroy();
      return;
    }
    const [status, title, detail] =
      code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [
            408,
            'Request Timeout',
            'The request did not arrive in time (headers within --headers-timeout, all of it within --request-timeout); nothing was forwarded.',
          ]
        : code === 'HPE_HEADER_OVERFLOW'
          ? [431, 'Request Header Fields Too Large', 'The request headers are too large; nothing was forwarded.']
          : [400, 'Bad Request', `The request is not valid HTTP/1.1 (${code}); nothing was forwarded.`];
    logger?.warn({ status, code, remote: socket.remoteAddress }, `idempo gateway answered ${status}: ${detail}`);
    const body = JSON.stringify({ type: 'about:blank', title, status, detail });
    socket.end(
      `HTTP/1.1 ${status} ${title}\r\ncontent-type: application/problem+json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
    );
  });

  /**
   * An absolute-form target (`POST http://host/path`, RFC 9112 §3.2.2) goes upstream in
   * origin-form, with the target's host as Host; `OPTIONS *` is answered here (an upstream has
   * no path for it); anything else is refused. Returns whether the request goes on.
   */
  function originForm(req: IncomingMessage, res: ServerResponse, target: string): boolean {
    if (target === '*' && req.method === 'OPTIONS') {
      res.writeHead(204, { allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS' }).end();
      return false;
    }
    let parsed: URL | undefined;
    try {
      parsed = new URL(target);
    } catch {}
    if (parsed === undefined || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      const detail = `The request target ${JSON.stringify(target.slice(0, 200))} is neither a path nor an http(s) URL; nothing was forwarded.`;
      logger?.warn(
        { status: 400, method: req.method, url: target.slice(0, 200) },
        `idempo gateway answered 400: ${detail}`,
      );
      const body = JSON.stringify({ type: 'about:blank', title: 'Bad Request', status: 400, detail });
      res.writeHead(400, { 'content-type': 'application/problem+json', connection: 'close' }).end(body);
      return false;
    }
    req.url = parsed.pathname + parsed.search;
    req.headers.host = parsed.host;
    return true;
  }

  async function health(res: ServerResponse): Promise<void> {
    const store = await storeStatus();
    const status = draining ? 'draining' : store === 'ok' ? 'ok' : 'unavailable';
    const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' };
    if (draining) headers.connection = 'close';
    res.writeHead(status === 'ok' ? 200 : 503, headers);
    res.end(JSON.stringify({ status, store }));
  }

  if ((await storeStatus()) !== 'ok') {
    // Start anyway: keyed requests get 503 until the store is back (its client reconnects by itself).
    logger?.warn(
      { store: opened.description },
      `idempo store ${opened.description} is unreachable: keyed requests get 503 IDEMPO_STORE_UNAVAILABLE and /healthz 503 until it answers`,
    );
  }

  const port = options.port ?? GATEWAY_DEFAULTS.port;
  const listenHost = options.host ?? GATEWAY_DEFAULTS.host;
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, listenHost, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    await proxy.close().catch(() => {});
    await opened.close().catch(() => {});
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EADDRNOTAVAIL') {
      throw new IdempotencyConfigInvalidError(
        `--host: ${JSON.stringify(listenHost)} is not ${code === 'EADDRNOTAVAIL' ? 'an address of this machine' : 'a host name this machine resolves'} (${code}); use an interface address such as 127.0.0.1 or 0.0.0.0.`,
        { cause: error },
      );
    }
    const why =
      code === 'EADDRINUSE'
        ? 'is already in use (another gateway, or another server?); pick another with --port'
        : code === 'EACCES'
          ? 'needs privileges (ports below 1024); pick one above 1023 with --port'
          : `cannot be listened on (${code ?? String(error)})`;
    throw new IdempotencyConfigInvalidError(`--port: ${listenHost}:${port} ${why}.`, { cause: error });
  }
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  const admin =
    options.adminPort === undefined
      ? undefined
      : await startAdmin({
          port: options.adminPort,
          host: options.adminHost ?? GATEWAY_DEFAULTS.adminHost,
          routes: [
            ...observability.routes,
            ...adminPageRoutes({
              store,
              token: options.adminToken,
              live: observability.routes.length > 0,
            }),
          ],
        }).catch(async (error: unknown) => {
          await new Promise((resolve) => server.close(resolve));
          await proxy.close().catch(() => {});
          await opened.close().catch(() => {});
          throw error;
        });
  if (admin)
    logger?.info({ adminUrl: admin.url, routes: observability.routes.map((r) => r.path) }, 'idempo admin listening');
  if (observability.tracing)
    logger?.info('idempo tracing: an OpenTelemetry SDK is registered, keyed requests get spans');
  logger?.info(
    { url, port: address.port, upstream, store: opened.description, version: VERSION },
    'idempo gateway listening',
  );
  /** Work under way: requests not yet answered, upstream exchanges, store writes. */
  const busy = () => active > 0 || proxy.pending > 0 || tracked.pending() > 0;

  let closing: Promise<void> | undefined;
  return {
    url,
    adminUrl: admin?.url,
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
        await admin?.close();
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

/** The `store` label of the gateway's store metrics: the store URL's scheme. */
function storeNameOf(store: string | IdempotencyStore | undefined): string {
  if (typeof store === 'object') return 'custom';
  const scheme = (store ?? GATEWAY_DEFAULTS.store).split(':')[0] ?? '';
  return scheme === 'postgresql' ? 'postgres' : scheme === 'rediss' ? 'redis' : scheme;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function checkUpstream(upstream: string | undefined): string {
  if (!upstream)
    throw new IdempotencyConfigInvalidError(
      '--upstream is required: the base URL of the service to protect, e.g. http://127.0.0.1:3000',
    );
  let url: URL;
  try {
    url = new URL(upstream);
  } catch {
    throw new IdempotencyConfigInvalidError(
      `--upstream: ${JSON.stringify(upstream)} is not a URL; expected e.g. http://127.0.0.1:3000`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new IdempotencyConfigInvalidError(`--upstream: expected an http:// or https:// URL, got ${url.protocol}`);
  }
  return upstream;
}

/** idempo's version, for the start-up line. */
const VERSION = (
  JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }
).version;

/**
 * The error formatter the engine and the adapter answer with, wrapped: every failure the gateway
 * answers itself is logged here, keyed or not (one line with status, code and message), and a
 * store error whose cause is a missing schema answers with that cause's own code
 * (`IDEMPO_STORE_NOT_MIGRATED`) rather than a plain `IDEMPO_STORE_UNAVAILABLE`.
 */
function gatewayFormatter(
  format: 'problem' | 'stripe' | ErrorFormatter,
  logger: Logger | undefined,
  keyHeader: string,
): ErrorFormatter {
  const base =
    typeof format === 'function'
      ? format
      : format === 'stripe'
        ? stripeFormatter
        : format === 'problem'
          ? problemFormatter
          : undefined;
  if (base === undefined) {
    throw new IdempotencyConfigInvalidError(
      `errorFormat: expected 'problem', 'stripe' or a function, got ${JSON.stringify(format)}`,
    );
  }
  return function gatewayError(error: IdempotencyError, request: IdempotencyRequest) {
    const cause = (error as { cause?: unknown }).cause;
    const shown =
      error.code === 'IDEMPO_STORE_UNAVAILABLE' &&
      (cause as IdempotencyError | undefined)?.code === 'IDEMPO_STORE_NOT_MIGRATED'
        ? (cause as IdempotencyError)
        : error;
    if (logger) {
      const level = shown.status >= 500 ? 'warn' : 'info';
      if (logger.isLevelEnabled(level)) {
        const key = request.header(keyHeader);
        const innermost = shown === error ? cause : (shown as { cause?: unknown }).cause;
        logger[level](
          {
            status: shown.status,
            code: shown.code,
            method: request.method,
            url: request.url,
            ...(key === undefined ? {} : { key }),
            ...(innermost === undefined ? {} : { err: innermost }),
          },
          `idempo gateway answered ${shown.status} ${shown.code}: ${shown.message}`,
        );
      }
    }
    return base(shown, request);
  };
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
  fields.durationMs = roundMs(fields.durationMs);
  logger[level](error === undefined ? fields : { ...fields, err: error }, `idempotency ${event.type}`);
}
