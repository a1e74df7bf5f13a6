// The cost of the Redis store's replicaAck, against the same run's bare case (no WAIT), on a
// private master + replica (redis-server 7, loopback, started and stopped here; the shared Redis at
// 6379 has no replica, so WAIT there would acknowledge nothing). Not part of `npm run bench`: that
// runner's cases share one Redis without replicas.
//
//   npm run build && node bench/replica-ack.js [--seconds 3] [--concurrency 64]
//
// Three figures per variant (bare, replicaAck { replicas: 1, timeout: '100ms' }), each through
// idem.handle() with a handler that does nothing, on one shared ioredis connection:
// - latency: one request at a time (claim + complete), p50/p99 in µs;
// - throughput: `concurrency` requests in flight on the shared connection, requests/s (WAIT blocks
//   the connection it arrives on until the replica acknowledges, so commands queue behind it);
// - stalled replica: the replica SIGSTOPped for `--stall` seconds under the same load: how many
//   requests were refused (503) and for how long, and what a refused request waited (WAIT's timeout).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { createIdempotency } from '../dist/index.js';
import { createRedisStore } from '../dist/stores/redis.js';
import { parseToolArgs } from './lib/cli.js';

const { values } = parseToolArgs(import.meta.url, {
  options: {
    seconds: { type: 'string', default: '3', number: 'positive' },
    concurrency: { type: 'string', default: '64', number: 'count' },
    stall: { type: 'string', default: '2', number: 'seconds' },
  },
});
const SECONDS = values.seconds;
const CONCURRENCY = values.concurrency;
const STALL_MS = values.stall * 1_000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function freePort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const children = [];
const dirs = [];
async function redisServer(args) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `idempo-bench-ack-${port}-`));
  dirs.push(dir);
  const child = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, ...args],
    { stdio: 'ignore' },
  );
  children.push(child);
  const probe = new Redis(port, { lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: null });
  probe.on('error', () => {});
  await probe.connect().catch(() => {});
  await probe.ping();
  return { port, child, probe };
}

function cleanup() {
  for (const child of children) {
    child.kill('SIGCONT');
    child.kill('SIGKILL');
  }
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}
process.on('exit', cleanup);

const master = await redisServer([]);
const replica = await redisServer(['--replicaof', '127.0.0.1', String(master.port)]);
for (;;) {
  const info = await replica.probe.info('replication');
  if (info.includes('master_link_status:up')) break;
  await sleep(50);
}

let seq = 0;
function request() {
  return new Request('http://bench/payments', {
    method: 'POST',
    headers: { 'idempotency-key': `bench-${process.pid}-${seq++}`, 'content-type': 'application/json' },
    body: '{"amount":1000,"currency":"eur"}',
  });
}
const handler = async () =>
  new Response('{"ok":true}', { status: 201, headers: { 'content-type': 'application/json' } });

function idemFor(client, replicaAck) {
  return createIdempotency({
    store: createRedisStore({ client, prefix: 'ibench-ack:', ...(replicaAck ? { replicaAck } : {}) }),
  });
}

const q = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];

async function latency(idem) {
  const samples = [];
  const until = Date.now() + SECONDS * 1_000;
  while (Date.now() < until) {
    const t = process.hrtime.bigint();
    const response = await idem.handle(request(), handler);
    if (response.status !== 201) throw new Error(`latency: got ${response.status}`);
    samples.push(Number(process.hrtime.bigint() - t) / 1_000);
  }
  samples.sort((a, b) => a - b);
  return { n: samples.length, p50: Math.round(q(samples, 0.5)), p99: Math.round(q(samples, 0.99)) };
}

async function load(idem, ms, onAnswer = () => {}) {
  let done = 0;
  const until = Date.now() + ms;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (Date.now() < until) {
        const t = Date.now();
        const response = await idem.handle(request(), handler);
        onAnswer(response.status, t, Date.now());
        if (response.status === 201) done++;
      }
    }),
  );
  return done;
}

async function throughput(idem) {
  await load(idem, 500); // warm
  const started = Date.now();
  const done = await load(idem, SECONDS * 1_000);
  return Math.round(done / ((Date.now() - started) / 1_000));
}

async function stalled(idem) {
  const refused = [];
  const stall = (async () => {
    await sleep(500);
    const at = Date.now();
    replica.child.kill('SIGSTOP');
    await sleep(STALL_MS);
    replica.child.kill('SIGCONT');
    return { at, until: Date.now() };
  })();
  let ok = 0;
  await load(idem, STALL_MS + 1_500, (status, t, end) => {
    if (status === 201) ok++;
    else refused.push({ status, t, end });
  });
  const window = await stall;
  const refusedWaits = refused.map((r) => r.end - r.t).sort((a, b) => a - b);
  const last = refused.length ? Math.max(...refused.map((r) => r.end)) : window.at;
  return {
    stallMs: window.until - window.at,
    refused: refused.length,
    refusedStatuses: [...new Set(refused.map((r) => r.status))].join('/'),
    refusingForMs: refused.length ? last - Math.min(...refused.map((r) => r.t)) : 0,
    refusedWaitP50Ms: refused.length ? q(refusedWaits, 0.5) : null,
    succeededDuringRun: ok,
  };
}

const client = new Redis(master.port, { maxRetriesPerRequest: 0 });
const bare = idemFor(client, undefined);
const acked = idemFor(client, { replicas: 1, timeout: '100ms' });

const results = {
  bare: { latency: await latency(bare), throughput: await throughput(bare) },
  replicaAck: { latency: await latency(acked), throughput: await throughput(acked) },
};
results.replicaAck.stalledReplica = await stalled(acked);
results.bare.stalledReplica = await stalled(bare);

const ratio = (a, b) => (a / b).toFixed(2);
console.log(
  `\nreplicaAck cost, ${SECONDS} s per figure, ${CONCURRENCY} requests in flight for throughput, node ${process.version}\n`,
);
console.log('| variant | latency p50 µs | latency p99 µs | req/s, shared connection | ratio to bare |');
console.log('|---|---:|---:|---:|---:|');
for (const [name, r] of Object.entries(results)) {
  console.log(
    `| ${name} | ${r.latency.p50} | ${r.latency.p99} | ${r.throughput} | ${ratio(r.throughput, results.bare.throughput)} |`,
  );
}
console.log('\nreplica SIGSTOPped under load:');
for (const [name, r] of Object.entries(results)) console.log(`  ${name}: ${JSON.stringify(r.stalledReplica)}`);
client.disconnect();
for (const s of [master, replica]) s.probe.disconnect();
cleanup();
process.exit(0);
