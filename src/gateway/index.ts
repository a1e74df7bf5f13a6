/**
 * The idempo gateway as a library: the same reverse proxy `idempo serve` runs.
 *
 * @module
 */
export { IdempotencyGatewayDrainingError } from '../vocabulary/index.js';
export { GATEWAY_DEFAULTS } from './defaults.js';
export { createStoreHealth, createStoreStatus, type StoreHealthOptions, type StoreStatus } from './health.js';
export { createGatewayLogger, type GatewayLoggerOptions, type LogFormat, settleLogs } from './log.js';
export type { OpenedStore, OpenStoreOptions } from './opened-store.js';
export { compilePathPatterns } from './path-patterns.js';
export { REDRIVE_HEADER } from './proxy.js';
export { type Gateway, type GatewayOptions, startGateway } from './server.js';
export { type StopOnSignalsOptions, stopOnSignals } from './shutdown.js';
export { openStore } from './store-url.js';
