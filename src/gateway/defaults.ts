/**
 * The gateway's own defaults, in one place: `startGateway` applies them and `idempo serve` shows
 * them in `--help`. The engine's defaults (lease, ttl, methods, …) are `IDEMPOTENCY_DEFAULTS`.
 */
export const GATEWAY_DEFAULTS = {
  port: 8080,
  host: '127.0.0.1',
  store: 'sqlite:./idempo.db',
  upstreamTimeout: '30s',
  upstreamDeadline: '5m',
  drainTimeout: '30s',
  headersTimeout: '20s',
  requestTimeout: '5m',
  keepAliveTimeout: '65s',
  healthPath: '/healthz',
  adminHost: '127.0.0.1',
  logFormat: 'json',
  logLevel: 'info',
} as const;
