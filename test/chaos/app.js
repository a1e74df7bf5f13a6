// Library mode: one instance of a plain node:http app protected by `idempotent()` from
// dist/adapters/node.js, on a shared store. Its side effect is a call to the ledger made inside
// `ctx.step('charge', …)`, so a re-run after a crash gets the stored charge instead of charging
// again, when the step's result was saved before the crash. Like the gateway, it marks a re-run
// of a key whose earlier owner crashed or stalled (`ctx.recovered`) for the ledger with
// `Idempo-Redrive: <token>`.
//
// Environment: CHAOS_PORT, CHAOS_STORE (sqlite:PATH | redis://… | redis-cluster://h:p,h:p,… |
// postgres://…), CHAOS_LEDGER, CHAOS_INSTANCE (`<index>:<generation>`), CHAOS_LEASE,
// CHAOS_REPLICA_ACK (`1`: the Redis store's `replicaAck: { replicas: 1, timeout: '100ms' }`),
// CHAOS_SYNCHRONOUS_COMMIT (the PostgreSQL store's `synchronousCommit`, e.g. `on`; empty: unset).
// Prints `app listening <port>`.
import http from 'node:http';
import { idempotencyContext, idempotent } from '../../dist/adapters/node.js';
import { createIdempotency } from '../../dist/index.js';

const port = Number(process.env.CHAOS_PORT ?? 0);
const storeUrl = process.env.CHAOS_STORE ?? '';
const ledger = process.env.CHAOS_LEDGER ?? '';
const instance = process.env.CHAOS_INSTANCE ?? '?';
const lease = process.env.CHAOS_LEASE ?? '2s';
const replicaAck = process.env.CHAOS_REPLICA_ACK === '1' ? { replicaAck: { replicas: 1, timeout: '100ms' } } : {};
const synchronousCommit = process.env.CHAOS_SYNCHRONOUS_COMMIT
  ? { synchronousCommit: process.env.CHAOS_SYNCHRONOUS_COMMIT }
  : {};

/** The store, built the way the docs tell a user to (fail-fast clients), from public exports. */
async function openStore(url) {
  if (url.startsWith('sqlite:')) {
    const { createSqliteStore } = await import('../../dist/stores/sqlite.js');
    return createSqliteStore({ path: url.slice('sqlite:'.length) });
  }
  if (url.startsWith('redis-cluster:')) {
    const { Cluster } = await import('ioredis');
    const { createRedisStore } = await import('../../dist/stores/redis.js');
    const nodes = url
      .slice('redis-cluster://'.length)
      .split(',')
      .map((hostPort) => ({ host: hostPort.split(':')[0], port: Number(hostPort.split(':')[1]) }));
    // Fail-fast, as docs/stores/redis.md tells a Cluster user; commandTimeout above WAIT's 100 ms.
    const client = new Cluster(nodes, {
      enableOfflineQueue: false,
      retryDelayOnFailover: 100,
      retryDelayOnClusterDown: 100,
      slotsRefreshTimeout: 1_000,
      redisOptions: {
        maxRetriesPerRequest: 0,
        autoResendUnfulfilledCommands: false,
        connectTimeout: 1_000,
        commandTimeout: 1_000,
      },
      lazyConnect: true,
    });
    client.on('error', () => {});
    client.connect().catch(() => {});
    return createRedisStore({ client, ...replicaAck });
  }
  if (url.startsWith('redis:')) {
    const { default: Redis } = await import('ioredis');
    const { createRedisStore } = await import('../../dist/stores/redis.js');
    const client = new Redis(url, {
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectTimeout: 1_000,
      commandTimeout: 1_000,
      retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
      lazyConnect: true,
    });
    client.on('error', () => {});
    // Started while Redis is down, the app serves 503s until it is back, as the gateway should.
    client.connect().catch(() => {});
    return createRedisStore({ client, ...replicaAck });
  }
  if (url.startsWith('postgres:')) {
    const { default: pg } = await import('pg');
    const { createPostgresStore } = await import('../../dist/stores/postgres.js');
    const pool = new pg.Pool({ connectionString: url, connectionTimeoutMillis: 1_000, max: 10 });
    pool.on('error', () => {});
    return createPostgresStore({ pool, ...synchronousCommit });
  }
  throw new Error(`app: unsupported store ${url}`);
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

/** The side effect: one execution in the ledger. */
function charge(key, body, ctx, attempt) {
  return new Promise((resolve, reject) => {
    const headers = {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      'idempotency-key': key,
      'x-chaos-instance': instance,
      'x-chaos-attempt': attempt ?? '',
    };
    if (ctx.recovered) headers['idempo-redrive'] = String(ctx.token);
    const request = http.request(`${ledger}/charge`, { method: 'POST', headers, agent }, (response) => {
      const chunks = [];
      response.on('data', (chunk) => chunks.push(chunk));
      response.on('end', () => {
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (error) {
          reject(error);
        }
      });
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(body);
  });
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const store = await openStore(storeUrl);
// One line per event, read by the harness for its evidence (recovered keys, lease losses, store errors).
const idem = createIdempotency({
  store,
  lease,
  onEvent: ({ type, key, reason, action, status }) => {
    process.stdout.write(`${JSON.stringify({ msg: `idempotency ${type}`, type, key, reason, action, status })}\n`);
  },
});

const server = http.createServer(
  idempotent(idem, async (req, res) => {
    const body = await readBody(req);
    const ctx = idempotencyContext(req);
    if (!ctx) {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('chaos app: a key is required');
      return;
    }
    const attempt = req.headers['x-chaos-attempt'];
    const result = await ctx.step('charge', () => charge(ctx.key, body, ctx, attempt));
    const out = JSON.stringify({ execution: result.execution, key: ctx.key, n: result.n });
    res.writeHead(201, { 'content-type': 'application/json' }).end(out);
  }),
);
server.keepAliveTimeout = 30_000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`app listening ${server.address().port}\n`);
});
