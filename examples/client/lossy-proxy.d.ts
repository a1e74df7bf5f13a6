/** Options of {@link startLossyProxy}. */
export interface LossyProxyOptions {
  /** Base URL requests are forwarded to, e.g. the gateway's `http://127.0.0.1:8080`. */
  target: string;
  /**
   * Share of requests whose response is dropped after the target has answered (0 to 1).
   * @default 0.25
   */
  dropRate?: number;
  /**
   * Share of requests dropped before they reach the target (0 to 1).
   * @default 0
   */
  dropRequestRate?: number;
  /**
   * Seed of the drop sequence; the same seed drops the same requests, counted in arrival order.
   * @default 1
   */
  seed?: number;
  /**
   * Port to listen on; `0` picks a free one.
   * @default 0
   */
  port?: number;
  /** @default '127.0.0.1' */
  host?: string;
}

/** What the proxy did so far. */
export interface LossyProxyStats {
  /** Requests received. */
  requests: number;
  /** Requests forwarded to the target. */
  forwarded: number;
  /** Requests cut off before reaching the target. */
  droppedRequests: number;
  /** Requests the target answered whose response the client never got. */
  droppedResponses: number;
}

/** A running lossy proxy. */
export interface LossyProxy {
  /** `http://host:port` to send requests to. */
  readonly url: string;
  readonly port: number;
  stats(): LossyProxyStats;
  /** Stops listening and closes every connection. */
  close(): Promise<void>;
}

/**
 * Starts a loopback proxy that drops a seeded share of responses after the target has done the work.
 *
 * @example
 * ```ts
 * const proxy = await startLossyProxy({ target: gateway.url, dropRate: 0.3, seed: 42 });
 * await idempotentFetch(`${proxy.url}/payments`, { method: 'POST', body });
 * ```
 */
export function startLossyProxy(options: LossyProxyOptions): Promise<LossyProxy>;

/** The proxy's seeded PRNG: numbers in [0, 1), the same sequence for the same seed. */
export function seededRandom(seed: number): () => number;

/** The request's headers less the hop-by-hop ones, as a proxy forwards them. */
export function forwardHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | string[]>;
