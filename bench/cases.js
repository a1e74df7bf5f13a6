/**
 * What the benchmark measures: every variant on both workloads, the baseline each is compared
 * with, and the targets of issue 20.
 *
 * A case is one server variant on one workload. `baseline` names the bare case of the same
 * framework on the same workload; `peerOf` marks the idempo case a peer must stay behind.
 */

const WORKLOADS = ['fresh', 'replay'];

/** Server variants. `module` is a file in servers/, `variant` and `store` are passed to its `start()`. */
const VARIANTS = [
  // Fastify
  { id: 'fastify', group: 'fastify', label: 'Fastify (bare)', module: 'fastify', variant: 'bare', kind: 'bare' },
  {
    id: 'fastify-idempo-memory',
    group: 'fastify',
    label: 'idempo · memory',
    module: 'fastify',
    variant: 'idempo',
    store: 'memory',
    kind: 'idempo',
    needs: ['fastify-adapter'],
  },
  // What observing costs (issue 17): the memory case with Prometheus metrics on a registry of its
  // own, and with metrics, key usage and traces (an OpenTelemetry SDK batching spans to an exporter
  // that drops them, so the spans are made, recorded and handed over, but nothing is sent).
  {
    id: 'fastify-idempo-memory-metrics',
    group: 'fastify',
    label: 'idempo · memory + metrics (diagnostic)',
    module: 'fastify',
    variant: 'idempo',
    store: 'memory',
    observe: 'metrics',
    kind: 'idempo',
    diagnostic: true,
    needs: ['fastify-adapter'],
  },
  {
    id: 'fastify-idempo-memory-observed',
    group: 'fastify',
    label: 'idempo · memory + metrics, usage, traces (diagnostic)',
    module: 'fastify',
    variant: 'idempo',
    store: 'memory',
    observe: 'all',
    kind: 'idempo',
    diagnostic: true,
    needs: ['fastify-adapter'],
  },
  // Layers of the Fastify + memory case, to show where its CPU per request goes (the ≤ +5 µs
  // target): Fastify's hook runners with two hooks that do nothing, and idempo's plugin over an
  // engine that does nothing (its hooks, its body handling and its response capture).
  {
    id: 'fastify-hooks-only',
    group: 'fastify',
    label: 'Fastify, two empty hooks (diagnostic)',
    module: 'fastify',
    variant: 'hooks-only',
    kind: 'bare',
    diagnostic: true,
    workloads: ['fresh'],
  },
  {
    id: 'fastify-adapter-only',
    group: 'fastify',
    label: 'idempo/fastify plugin alone, no engine (diagnostic)',
    module: 'fastify',
    variant: 'adapter-only',
    kind: 'idempo',
    diagnostic: true,
    workloads: ['fresh'],
    needs: ['fastify-adapter'],
  },
  {
    id: 'fastify-idempo-sqlite',
    group: 'fastify',
    label: 'idempo · SQLite',
    module: 'fastify',
    variant: 'idempo',
    store: 'sqlite',
    kind: 'idempo',
    needs: ['fastify-adapter'],
  },
  {
    id: 'fastify-idempo-redis',
    group: 'fastify',
    label: 'idempo · Redis',
    module: 'fastify',
    variant: 'idempo',
    store: 'redis',
    kind: 'idempo',
    needs: ['fastify-adapter', 'redis'],
  },
  {
    id: 'fastify-idempo-redis-autopipeline',
    group: 'fastify',
    label: 'idempo · Redis, ioredis auto-pipelining',
    module: 'fastify',
    variant: 'idempo',
    store: 'redis',
    autoPipelining: true,
    kind: 'idempo',
    needs: ['fastify-adapter', 'redis'],
  },
  {
    id: 'fastify-idempo-node-redis',
    group: 'fastify',
    label: 'idempo · Redis, node-redis client',
    module: 'fastify',
    variant: 'idempo',
    store: 'redis',
    redisClient: 'node-redis',
    kind: 'idempo',
    needs: ['fastify-adapter', 'redis'],
  },
  {
    id: 'fastify-idempo-postgres',
    group: 'fastify',
    label: 'idempo · PostgreSQL',
    module: 'fastify',
    variant: 'idempo',
    store: 'postgres',
    kind: 'idempo',
    needs: ['fastify-adapter', 'postgres'],
  },
  {
    id: 'fastify-nic-memory',
    group: 'fastify',
    label: '@node-idempotency/core · memory',
    module: 'fastify',
    variant: 'node-idempotency',
    store: 'memory',
    kind: 'peer',
    peerOf: 'fastify-idempo-memory',
  },
  {
    id: 'fastify-nic-redis',
    group: 'fastify',
    label: '@node-idempotency/core · Redis',
    module: 'fastify',
    variant: 'node-idempotency',
    store: 'redis',
    kind: 'peer',
    peerOf: 'fastify-idempo-redis',
    needs: ['redis'],
  },
  {
    id: 'fastify-powertools-redis',
    group: 'fastify',
    label: 'Powertools idempotency · Redis',
    module: 'fastify',
    variant: 'powertools',
    store: 'redis',
    kind: 'peer',
    peerOf: 'fastify-idempo-redis',
    needs: ['redis'],
  },
  // Express
  { id: 'express', group: 'express', label: 'Express (bare)', module: 'express', variant: 'bare', kind: 'bare' },
  {
    id: 'express-idempo-memory',
    group: 'express',
    label: 'idempo · memory',
    module: 'express',
    variant: 'idempo',
    store: 'memory',
    kind: 'idempo',
    needs: ['express-adapter'],
  },
  {
    id: 'express-idempo-redis',
    group: 'express',
    label: 'idempo · Redis',
    module: 'express',
    variant: 'idempo',
    store: 'redis',
    kind: 'idempo',
    needs: ['express-adapter', 'redis'],
  },
  {
    id: 'express-ei-memory',
    group: 'express',
    label: 'express-idempotency · memory',
    module: 'express',
    variant: 'express-idempotency',
    store: 'memory',
    kind: 'peer',
    peerOf: 'express-idempo-memory',
  },
  {
    id: 'express-ei-redis',
    group: 'express',
    label: 'express-idempotency · Redis',
    module: 'express',
    variant: 'express-idempotency',
    store: 'redis',
    kind: 'peer',
    peerOf: 'express-idempo-redis',
    needs: ['redis'],
  },
  // node:http
  { id: 'node', group: 'node', label: 'node:http (bare)', module: 'node', variant: 'bare', kind: 'bare' },
  {
    id: 'node-idempo-memory',
    group: 'node',
    label: 'idempo/node · memory',
    module: 'node',
    variant: 'idempo',
    store: 'memory',
    kind: 'idempo',
  },
  // Layers of the case above, to show where its CPU per request goes (issue 2's 0.80× target): the
  // adapter's own mechanics with no engine behind them; the whole thing over a store that keeps
  // nothing; and the whole thing with the default fingerprint (SHA-256 over canonical JSON)
  // replaced by a constant.
  {
    id: 'node-adapter-only',
    group: 'node',
    label: 'idempo/node adapter alone, no engine (diagnostic)',
    module: 'node',
    variant: 'adapter-only',
    kind: 'idempo',
    diagnostic: true,
    workloads: ['fresh'],
  },
  {
    id: 'node-idempo-keeps-nothing',
    group: 'node',
    label: 'idempo/node · a store that keeps nothing (diagnostic)',
    module: 'node',
    variant: 'idempo',
    store: 'keeps-nothing',
    kind: 'idempo',
    diagnostic: true,
    workloads: ['fresh'],
  },
  {
    id: 'node-idempo-memory-fixed-fp',
    group: 'node',
    label: 'idempo/node · memory, constant fingerprint (diagnostic)',
    module: 'node',
    variant: 'idempo',
    store: 'memory',
    fixedFingerprint: true,
    kind: 'idempo',
    diagnostic: true,
    workloads: ['fresh'],
  },
  // Reverse proxies in front of one upstream
  {
    id: 'proxy',
    group: 'proxy',
    label: 'plain undici proxy',
    module: 'proxy',
    variant: 'plain',
    kind: 'bare',
    upstream: true,
  },
  {
    id: 'gateway-memory',
    group: 'proxy',
    label: 'idempo gateway · memory',
    module: 'proxy',
    variant: 'gateway',
    store: 'memory',
    kind: 'idempo',
    upstream: true,
  },
  {
    id: 'gateway-sqlite',
    group: 'proxy',
    label: 'idempo gateway · SQLite (its default)',
    module: 'proxy',
    variant: 'gateway',
    store: 'sqlite',
    kind: 'idempo',
    upstream: true,
  },
  {
    id: 'gateway-redis',
    group: 'proxy',
    label: 'idempo gateway · Redis',
    module: 'proxy',
    variant: 'gateway',
    store: 'redis',
    kind: 'idempo',
    upstream: true,
    needs: ['redis'],
  },
  {
    id: 'gateway-memory-quiet',
    group: 'proxy',
    label: 'idempo gateway · memory, LOG_LEVEL=warn',
    module: 'proxy',
    variant: 'gateway',
    store: 'memory',
    logLevel: 'warn',
    kind: 'idempo',
    upstream: true,
  },
  // A handler that writes its effect to PostgreSQL: one INSERT of the payment per request, on a
  // pool of 10 that idempo's PostgreSQL store shares, as an application would run it.
  {
    id: 'fastify-row',
    group: 'fastify-row',
    label: 'Fastify, inserting one row (bare)',
    module: 'fastify',
    variant: 'bare',
    handler: 'insert-row',
    kind: 'bare',
    workloads: ['fresh'],
    needs: ['postgres'],
  },
  // What a transaction costs the bare handler: its row between BEGIN and COMMIT on a client of
  // the same pool, the three round trips `ctx.transaction` starts from.
  {
    id: 'fastify-row-in-tx',
    group: 'fastify-row',
    label: 'Fastify, inserting one row in BEGIN/COMMIT (bare, diagnostic)',
    module: 'fastify',
    variant: 'bare',
    handler: 'insert-row-in-tx',
    kind: 'bare',
    diagnostic: true,
    workloads: ['fresh'],
    needs: ['postgres'],
  },
  {
    id: 'fastify-row-idempo-postgres',
    group: 'fastify-row',
    label: 'idempo · PostgreSQL, record in its own transactions',
    module: 'fastify',
    variant: 'idempo',
    store: 'postgres',
    handler: 'insert-row',
    kind: 'idempo',
    workloads: ['fresh'],
    needs: ['fastify-adapter', 'postgres'],
  },
  {
    id: 'fastify-row-idempo-postgres-tx',
    group: 'fastify-row',
    label: 'idempo · PostgreSQL, row and step in one transaction (ctx.transaction)',
    module: 'fastify',
    variant: 'idempo',
    store: 'postgres',
    handler: 'insert-row-tx',
    kind: 'idempo',
    workloads: ['fresh'],
    needs: ['fastify-adapter', 'postgres'],
  },
];

export const GROUPS = {
  fastify: { title: 'Fastify', baseline: 'fastify' },
  express: { title: 'Express', baseline: 'express' },
  node: { title: 'node:http', baseline: 'node' },
  proxy: { title: 'Reverse proxy (gateway)', baseline: 'proxy' },
  'fastify-row': { title: 'Fastify, a handler inserting one PostgreSQL row', baseline: 'fastify-row' },
};

/**
 * Issue 20's targets. `ratio`: at least this × the baseline's req/s; `cpu`: at most this many µs
 * of server CPU per request above the baseline (judged at the fixed rate); `peer` and
 * `peerRatio`: at least this × that peer case's req/s, measured in the same run.
 */
export const TARGETS = [
  { variant: 'gateway-sqlite', workload: 'fresh', ratio: 0.8 },
  { variant: 'gateway-sqlite', workload: 'replay', ratio: 1.5 },
  { variant: 'fastify-idempo-sqlite', workload: 'fresh', ratio: 0.5 },
  { variant: 'fastify-idempo-sqlite', workload: 'replay', ratio: 0.85 },
  { variant: 'fastify-idempo-redis', workload: 'fresh', peer: 'fastify-nic-redis', peerRatio: 1.1 },
  { variant: 'fastify-idempo-redis', workload: 'replay', peer: 'fastify-nic-redis', peerRatio: 1.3 },
  { variant: 'fastify-row-idempo-postgres', workload: 'fresh', ratio: 0.5 },
  { variant: 'fastify-row-idempo-postgres-tx', workload: 'fresh', ratio: 0.7 },
  { variant: 'node-idempo-memory', workload: 'fresh', ratio: 0.85 },
  { variant: 'express-idempo-memory', workload: 'fresh', ratio: 0.9 },
  { variant: 'fastify-idempo-memory', workload: 'fresh', cpu: 5 },
];

export function allCases() {
  const cases = [];
  for (const variant of VARIANTS) {
    for (const workload of variant.workloads ?? WORKLOADS) {
      cases.push({
        ...variant,
        variantId: variant.id,
        id: `${variant.id}/${workload}`,
        workload,
        baseline: `${GROUPS[variant.group].baseline}/${workload}`,
      });
    }
  }
  return cases;
}
