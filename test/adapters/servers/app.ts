/**
 * The behaviour every conformance server implements, whatever its framework: the routes' logic
 * lives here once, and each server under this folder only wires it into its framework's routing.
 *
 *   GET|POST /orders   echoes the JSON body: 201 (POST) or 200 (GET), header `x-custom: orders`
 *   POST /slow         waits until the test opens the gate, then 201
 *   POST /flaky        throws on odd calls, 201 on even ones
 *   POST /unavailable  503 on odd calls, 201 on even ones
 *   POST /stream       200 text/plain written in three chunks
 *   POST /first-held   the first call per key waits until the test opens the gate, later ones
 *                      answer at once: 201 with the call's number
 *
 * Handler calls are counted per route and Idempotency-Key, so tests sharing a server never see
 * each other's counts.
 */
import type { IdempotencyOptions } from '../../../src/engine/types.js';

export interface TestApp {
  /** Counts a handler call for `route` under `key` (the raw header, or none) and returns the count. */
  count(route: string, key: string | undefined): number;
  /** How often `route` ran under `key`. */
  calls(route: string, key: string | undefined): number;
  /** Holds `/slow` handlers until {@link openGate}. */
  closeGate(): void;
  openGate(): void;
  /** What `/slow` handlers await. */
  gate(): Promise<void>;
  /** Milliseconds `/slow` handlers sleep besides the gate. */
  slowMs: number;
}

export const STREAM_CHUNKS = ['alpha\n', 'beta\n', 'gamma\n'] as const;

export function createTestApp(): TestApp {
  const counts = new Map<string, number>();
  let gate: Promise<void> = Promise.resolve();
  let open: () => void = () => {};
  const app: TestApp = {
    count(route, key) {
      const name = `${route}:${key ?? '(none)'}`;
      const n = (counts.get(name) ?? 0) + 1;
      counts.set(name, n);
      return n;
    },
    calls: (route, key) => counts.get(`${route}:${key ?? '(none)'}`) ?? 0,
    closeGate() {
      gate = new Promise((resolve) => {
        open = resolve;
      });
    },
    openGate: () => open(),
    async gate() {
      await gate;
      if (app.slowMs > 0) await sleep(app.slowMs);
    },
    slowMs: 0,
  };
  return app;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A server listening on loopback, started by one of the factories here. */
export interface RunningServer {
  /** Base URL, e.g. `http://127.0.0.1:54321`. */
  url: string;
  close(): Promise<void>;
}

/** Starts a server for `app` whose routes are protected by an engine made from `options`. */
export type ServerFactory = (app: TestApp, options: IdempotencyOptions) => Promise<RunningServer>;

/** The request header every handler reads to count its calls per key. */
export const KEY_HEADER = 'idempotency-key';
