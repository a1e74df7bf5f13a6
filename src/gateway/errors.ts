import { IdempotencyError, PROBLEM_BASE } from '../engine/errors.js';

/**
 * The gateway is shutting down (SIGTERM) and takes no new request; the ones it has are finishing.
 * Nothing was run: retry at once, on another instance (the load balancer stops sending here once
 * `/healthz` answers `503`).
 *
 * @example
 * ```ts
 * if (draining) writeResponse(res, idem.formatError(new IdempotencyGatewayDrainingError('draining'), request));
 * ```
 */
export class IdempotencyGatewayDrainingError extends IdempotencyError {
  override readonly code = 'IDEMPO_GATEWAY_DRAINING';
  override readonly status = 503;
  override readonly type = `${PROBLEM_BASE}gateway-draining`;
  override readonly title = 'The gateway is shutting down';
}
