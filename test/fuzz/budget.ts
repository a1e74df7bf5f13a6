/**
 * How many generated inputs each fuzz test runs. `IDEMPO_FUZZ_RUNS` is the total over every
 * property in test/fuzz (`npm run fuzz` sets 100000); without it `npm test` runs a small total,
 * so the fuzz tests stay a few seconds of the suite. Each property takes a fixed share, so a run's
 * count is the same whichever files run. `IDEMPO_FUZZ_SEED` replays a run fast-check reported.
 */
export const TOTAL_RUNS = positive(process.env.IDEMPO_FUZZ_RUNS) ?? 1_500;

/** Each property's share of {@link TOTAL_RUNS}; they add up to 1. */
export const SHARES = {
  'engine: one request': 0.45,
  'engine: a retry and a different request': 0.25,
  'engine: key parsing': 0.1,
  'engine: fingerprint is stable': 0.07,
  'faces: one fingerprint for web, node:http, express, fastify': 0.05,
  'gateway: raw HTTP/1.1 over sockets': 0.08,
} as const;

/** Runs of the property named `name`: its share of the total, at least 10. */
export function runsFor(name: keyof typeof SHARES): number {
  return Math.max(10, Math.round(TOTAL_RUNS * SHARES[name]));
}

/** fast-check parameters for the property named `name`. */
export function fuzzParameters(name: keyof typeof SHARES): { numRuns: number; seed?: number; endOnFailure: true } {
  const seed = process.env.IDEMPO_FUZZ_SEED;
  return {
    numRuns: runsFor(name),
    endOnFailure: true,
    ...(seed === undefined ? {} : { seed: Number(seed) }),
  };
}

let inputs = 0;

/**
 * Lets the worker's event loop turn, every 100 generated inputs. A property whose inputs settle
 * in microtasks alone (the engine on the memory store) would otherwise hold the loop for the whole
 * run, and past a minute vitest's worker gives up on its own messages to the runner ("Timeout
 * calling onTaskUpdate") and the run fails although every property held.
 */
export async function breathe(): Promise<void> {
  if (++inputs % 100 === 0) await new Promise((resolve) => setImmediate(resolve));
}

/** A timeout for a test that runs `runs` inputs of about `msEach` each, with room for a slow machine. */
export function timeoutFor(name: keyof typeof SHARES, msEach: number): number {
  return Math.max(30_000, runsFor(name) * msEach * 4);
}

function positive(value: string | undefined): number | undefined {
  if (value === undefined || value === '') return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new Error(`IDEMPO_FUZZ_RUNS: expected a positive integer, got ${value}`);
  return n;
}
