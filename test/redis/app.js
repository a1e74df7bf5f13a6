// An app instance in its own OS process, for the Redis integration tests. It uses the built
// package (`npm test` builds first) and a real ioredis client, and talks to its parent in JSON
// lines: on stdout it reports (`ready`, `listening`, `started`, `event`, `results`), on stdin it
// takes `go` lines that release a waiting step.
//
//   node test/redis/app.js load   — waits for `go`, then runs `requests` concurrent idem.handle()
//                                   calls over `keys` and reports every response;
//   node test/redis/app.js serve  — an HTTP server (the node:http adapter); with `block`, each
//                                   handler saves a step, reports `started` and waits for a `go`.
//                                   `respond` picks how it answers: `write-head` (default:
//                                   writeHead then end), `status` (statusCode and end only), or
//                                   `head-first` (writeHead and flushHeaders, reports `head`, then
//                                   waits for its `go` before end). With `blockInStep`, the step's
//                                   own work reports `step` and waits for a `go` before it returns,
//                                   so a test can act while the side effect is under way, unsaved.
//
// Its configuration comes as JSON in IDEMPO_TEST_CONFIG.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';
import { Cluster, Redis } from 'ioredis';
import { idempotencyContext, idempotent } from '../../dist/adapters/node.js';
import { createIdempotency } from '../../dist/index.js';
import { createRedisStore } from '../../dist/stores/redis.js';

const mode = process.argv[2];
const config = JSON.parse(process.env.IDEMPO_TEST_CONFIG ?? '{}');

function send(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const goWaiters = [];
let goCredits = 0;
createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'go') return;
  const waiter = goWaiters.shift();
  if (waiter) waiter();
  else goCredits++;
});
function go() {
  if (goCredits > 0) {
    goCredits--;
    return Promise.resolve();
  }
  return new Promise((resolve) => goWaiters.push(resolve));
}

const client = config.cluster
  ? new Cluster(config.cluster, { lazyConnect: true })
  : new Redis({ ...config.redis, lazyConnect: true });
await client.connect();

const store = createRedisStore({ client, prefix: config.prefix });
const idem = createIdempotency({
  store,
  lease: config.lease ?? '5s',
  ttl: config.ttl ?? '60s',
  concurrent: config.concurrent ?? 'reject',
  waitTimeout: config.waitTimeout ?? '10s',
  onEvent(event) {
    send({ type: 'event', event: { type: event.type, key: event.key, status: event.status, reason: event.reason } });
  },
});

if (mode === 'load') {
  let executions = 0;
  send({ type: 'ready', pid: process.pid });
  await go();
  const results = await Promise.all(
    Array.from({ length: config.requests }, async (_, i) => {
      const key = config.keys[i % config.keys.length];
      const request = new Request('http://app.test/orders', {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body: JSON.stringify({ item: key, quantity: 1 }),
      });
      const response = await idem.handle(request, async () => {
        executions++;
        await client.incr(`${config.prefix}executions:${key}`);
        await sleep(config.handlerMs ?? 50);
        return Response.json({ key, pid: process.pid, id: randomUUID() }, { status: 201 });
      });
      return {
        key,
        status: response.status,
        body: await response.text(),
        replayed: response.headers.get('idempotent-replayed') === 'true',
      };
    }),
  );
  send({ type: 'results', executions, results });
  await store.close();
  await client.quit();
} else if (mode === 'serve') {
  const server = createServer(
    idempotent(idem, async (req, res) => {
      const ctx = idempotencyContext(req);
      const charge = ctx
        ? await ctx.step('charge', async () => {
            send({ type: 'step', key: ctx.key });
            if (config.blockInStep) await go();
            return { id: `ch_${config.name}_${process.pid}` };
          })
        : { id: 'unprotected' };
      send({
        type: 'started',
        key: ctx?.key,
        storeKey: ctx?.storeKey,
        token: ctx?.token,
        recovered: ctx?.recovered,
        charge,
      });
      const body = JSON.stringify({ owner: config.name, pid: process.pid, charge, recovered: ctx?.recovered ?? null });
      if (config.respond === 'head-first') {
        // The head goes on the wire before the handler waits: its client has a 201 status line.
        res.writeHead(201, { 'content-type': 'application/json' });
        res.flushHeaders();
        send({ type: 'head', key: ctx?.key });
        if (config.block) await go();
        res.end(body);
        return;
      }
      if (config.block) await go();
      if (config.respond === 'status') {
        // Nothing is written before end(): idempo can still answer instead of this response.
        res.statusCode = 201;
        res.setHeader('content-type', 'application/json');
        res.end(body);
        return;
      }
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(body);
    }),
  );
  server.listen(0, '127.0.0.1', () => send({ type: 'listening', port: server.address().port }));
} else {
  throw new Error(`unknown mode ${mode}`);
}
