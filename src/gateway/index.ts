/**
 * The idempo gateway as a library: the same reverse proxy `idempo serve` runs.
 *
 * @module
 */
export { compilePathPatterns } from './path-patterns.js';
export { type Gateway, type GatewayOptions, startGateway } from './server.js';
export { type OpenedStore, openStore } from './store-url.js';
