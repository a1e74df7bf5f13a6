// The scenarios of `npm run chaos`. Every one runs the same faults unless it says otherwise:
// 3 instances on one store behind a balancer that drops 40% of answers after the work was done,
// 5% of attempts abandoned by their client 5–40 ms in, 8% of upstream executions slower (1.5 s)
// than the gateway's --upstream-timeout (1 s), an instance SIGKILLed every ~4 s and restarted
// 0.5 s later, and, on Redis and PostgreSQL, the private store server stopped hard every ~8 s for
// 1.5 s. Leases are 5 s: longer than a store outage with its restart, as a deployment's lease
// should be longer than its store's failover (an owner whose lease runs out while the store is
// down is, to every other instance, an owner that stalled), and short enough that the keys of
// killed instances are re-driven within the run.

/** Defaults of a full run; `--quick` shrinks the counts and durations. */
export const DEFAULTS = {
  instances: 3,
  ops: 400,
  durationMs: 40_000,
  seed: 7,
  dropRate: 0.4,
  abandonRate: 0.05,
  slowRate: 0.08,
  slowMs: 1_500,
  upstreamTimeout: '1s',
  lease: '5s',
  killEveryMs: 4_000,
  restartAfterMs: 500,
  storeOutageEveryMs: 8_000,
  storeDownMs: 1_500,
  maxAttempts: 20,
  opBudgetMs: 30_000,
  attemptTimeoutMs: 10_000,
  maxRetryAfterMs: 1_000,
  finalWindowMs: 10_000,
};

export const QUICK = {
  ops: 60,
  durationMs: 8_000,
  killEveryMs: 2_500,
  storeOutageEveryMs: 4_000,
  storeDownMs: 1_000,
  opBudgetMs: 20_000,
  finalWindowMs: 8_000,
};

/** name → what differs from DEFAULTS. */
export const SCENARIOS = {
  'gateway-sqlite': { mode: 'gateway', store: 'sqlite', about: '3 gateways on one SQLite file' },
  'gateway-redis': { mode: 'gateway', store: 'redis', about: '3 gateways on a private Redis, stopped hard' },
  'gateway-postgres': { mode: 'gateway', store: 'postgres', about: '3 gateways on a private PostgreSQL, crashed' },
  'library-sqlite': { mode: 'library', store: 'sqlite', about: 'node:http + idempotent() + ctx.step on SQLite' },
  'library-redis': { mode: 'library', store: 'redis', about: 'node:http + idempotent() + ctx.step on Redis' },
  'library-postgres': {
    mode: 'library',
    store: 'postgres',
    about: 'node:http + idempotent() + ctx.step on PostgreSQL',
  },
};

/**
 * Failover on PostgreSQL (postgres-failover.js): library-mode apps on a pg Pool whose connection
 * string names an endpoint the harness re-points (node-postgres has no multi-host failover), a
 * private primary with one streaming standby behind a replication link delayed 10 ms each way (a
 * standby at network distance: on loopback it is never behind, so the control could lose nothing
 * and the option would cost nothing). 3 to 9 s after the previous failover has finished, the
 * primary crashes (every process SIGKILLed at once, for good), 1.5 s later (the failure detector)
 * the standby is promoted and the endpoint re-pointed, and a new standby is built from the new
 * primary. No instance kills and no slow upstream, so every duplicate comes from the failover.
 *
 * - `failover-postgres-promote`, the control: an asynchronous standby and `synchronousCommit`
 *   unset. A claim, step or completion the primary acknowledged can be missing on the promoted
 *   standby; its duplicates are reported, with the lost write as their cause, and do not fail.
 * - `failover-postgres-promote-sync`: the standby named in `synchronous_standby_names` and the
 *   store's `synchronousCommit: 'on'`, which returns once the standby has flushed the commit's
 *   WAL. That is enough here: promotion replays every flushed record before it accepts writes,
 *   and idempo reads its records from the primary only, so `'remote_apply'` (the standby has also
 *   replayed it, for reads on the standby) would add replay time to every write and no safety.
 *   Must show no duplicate.
 *
 * Leases are 20 s, as for Redis below: longer than the failover (crash, detection, promotion),
 * and than the keys a commit in flight at the crash leaves held (the claim's outcome is unknown,
 * so the engine answers 503 and the key stays in flight until its lease passes).
 */
const POSTGRES_FAILOVER_SCENARIOS = Object.fromEntries(
  [false, true].map((synchronous) => [
    `failover-postgres-promote${synchronous ? '-sync' : ''}`,
    {
      mode: 'library',
      store: 'postgres-failover',
      fault: 'promote',
      synchronousStandby: synchronous,
      ...(synchronous ? { synchronousCommit: 'on' } : {}),
      control: !synchronous,
      about: `PostgreSQL primary + streaming standby: primary crashed, standby promoted; ${
        synchronous ? "synchronous standby, synchronousCommit 'on'" : 'asynchronous standby'
      }`,
      ops: 600,
      durationMs: 30_000,
      killEveryMs: 0,
      slowRate: 0,
      storeOutageEveryMs: 6_000,
      promoteAfterMs: 1_500,
      replicationDelayMs: 10,
      lease: '20s',
    },
  ]),
);

/**
 * Failover: library-mode apps on an ioredis Cluster client, a private Redis Cluster of 3 masters +
 * 3 replicas (cluster-node-timeout 1.5 s, AOF everysec), one fault on a random master every ~6 s,
 * no instance kills and no slow upstream, so that every duplicate comes from the failover. Each
 * fault runs without and with the store's `replicaAck` ({ replicas: 1, timeout: '100ms' }); the
 * runs without it report duplicates and do not fail the run (they are the control), the runs with
 * it must show none.
 *
 * Leases are 20 s, by the rule above: longer than the store's failover. With `replicaAck` a shard
 * refuses writes from its promotion until the old master has resynced as its replica, measured
 * here at 5.1 s median and 12.9 s at most after a graceful failover, 13.8 s median after a kill;
 * an owner whose renewals and step are refused for longer than its lease is, to every other
 * instance, a dead one, and a 5 s lease had a retry take such a live owner's key over.
 */
const FAILOVER_FAULTS = {
  kill: 'master SIGKILLed, restarted 0.5 s later',
  pause: 'master SIGSTOPped until its replica is promoted, then SIGCONTed',
  failover: 'graceful CLUSTER FAILOVER',
  'replica-stall': 'replica SIGSTOPped for 3 s',
};

export const FAILOVER_SCENARIOS = {
  ...Object.fromEntries(
    Object.entries(FAILOVER_FAULTS).flatMap(([fault, about]) =>
      [false, true].map((replicaAck) => [
        `failover-redis-${fault}${replicaAck ? '-ack' : ''}`,
        {
          mode: 'library',
          store: 'redis-cluster',
          fault,
          replicaAck,
          control: !replicaAck,
          about: `Redis Cluster 3+3: ${about}; ${replicaAck ? 'with' : 'without'} replicaAck`,
          ops: 600,
          durationMs: 30_000,
          killEveryMs: 0,
          slowRate: 0,
          storeOutageEveryMs: 6_000,
          storeDownMs: 3_000,
          lease: '20s',
        },
      ]),
    ),
  ),
  ...POSTGRES_FAILOVER_SCENARIOS,
};

export const FAILOVER_QUICK = { ops: 200, durationMs: 12_000, storeOutageEveryMs: 4_000 };

/**
 * Not in a default run: the harness's own check. The gateway is told to protect PUT only, so the
 * clients' POSTs pass through untouched and every retry that reaches the ledger runs again: the
 * run must show unexplained duplicates, or the harness cannot see any.
 */
export const CONTROLS = {
  'control-unprotected': {
    mode: 'gateway',
    store: 'sqlite',
    about: 'harness self-check: POST not protected, duplicates must show',
    gatewayArgs: ['--methods', 'PUT'],
  },
};

/** The scenario `name` with sizes resolved; `overrides` win over quick and defaults. */
export function resolveScenario(name, { quick = false, overrides = {} } = {}) {
  const scenario = SCENARIOS[name] ?? FAILOVER_SCENARIOS[name] ?? CONTROLS[name];
  if (!scenario)
    throw new Error(
      `unknown scenario ${name}; known: ${[...Object.keys(SCENARIOS), ...Object.keys(FAILOVER_SCENARIOS), ...Object.keys(CONTROLS)].join(', ')}`,
    );
  // A failover scenario's own sizes come first; --quick only shrinks its load.
  if (scenario.fault) return { name, ...DEFAULTS, ...scenario, ...(quick ? FAILOVER_QUICK : {}), ...overrides };
  return { name, ...DEFAULTS, ...(quick ? QUICK : {}), ...scenario, ...overrides };
}
