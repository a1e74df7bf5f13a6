/**
 * The idempo gateway as a library: the same reverse proxy `idempo serve` runs.
 *
 * @module
 */
export { IdempotencyGatewayDrainingError } from './errors.js';
export { createStoreHealth, type StoreHealthOptions } from './health.js';
export { compilePathPatterns } from './path-patterns.js';
export { REDRIVE_HEADER } from './proxy.js';
export { type Gateway, type GatewayOptions, startGateway } from './server.js';
export { type OpenedStore, openStore } from './store-url.js';
