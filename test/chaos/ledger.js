// The ledger upstream: an HTTP service, in its own process, that records every execution it is
// asked for. An execution is counted the moment the request reaches it (the side effect happens
// first, then the answer takes its time), so any request that gets here counts, whether or not its
// caller lives to see the answer. It answers 201 with the execution's id.
//
// What it records per execution: the Idempotency-Key, the how-many-th execution of that key it is,
// the re-drive marker `Idempo-Redrive` (sent by the gateway when it re-drives a key whose earlier
// owner crashed or stalled; the library-mode app sends it when `ctx.recovered`), which instance and
// instance generation sent it (`x-chaos-instance`, set by the balancer, forwarded by the gateway),
// the client attempt (`x-chaos-attempt`), when it started, when its answer was fully handed to the
// caller, and whether the caller hung up before that.
//
// Run as a program: `node test/chaos/ledger.js` with LEDGER_SLOW_RATE, LEDGER_SLOW_MS,
// LEDGER_WORK_MIN_MS, LEDGER_WORK_MAX_MS, LEDGER_SEED; prints `ledger listening <port>`.
// `GET /ledger` returns every execution as JSON. Imported: startLedger() spawns it.
import http from 'node:http';
import { fileURLToPath } from 'node:url';
import { seededRandom } from '../../examples/client/lossy-proxy.js';
import { HOST, onLines, spawnTracked } from './procs.js';

function serve() {
  const slowRate = Number(process.env.LEDGER_SLOW_RATE ?? 0);
  const slowMs = Number(process.env.LEDGER_SLOW_MS ?? 1_500);
  const workMin = Number(process.env.LEDGER_WORK_MIN_MS ?? 20);
  const workMax = Number(process.env.LEDGER_WORK_MAX_MS ?? 60);
  const random = seededRandom(Number(process.env.LEDGER_SEED ?? 1));
  const started = Date.now();
  const executions = [];
  const perKey = new Map();

  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/ledger') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ started, executions }));
      return;
    }
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const key = req.headers['idempotency-key'] ?? null;
      const n = (perKey.get(key) ?? 0) + 1;
      perKey.set(key, n);
      const slow = random() < slowRate;
      const work = slow ? slowMs : workMin + Math.floor(random() * (workMax - workMin + 1));
      const execution = {
        id: `x${executions.length + 1}`,
        key,
        n,
        redrive: req.headers['idempo-redrive'] ?? null,
        instance: req.headers['x-chaos-instance'] ?? null,
        attempt: req.headers['x-chaos-attempt'] ?? null,
        body: Buffer.concat(chunks).toString('utf8'),
        slow,
        workMs: work,
        start: Date.now(),
        answered: null,
        hungUp: null,
      };
      executions.push(execution);
      res.once('close', () => {
        if (!res.writableFinished) execution.hungUp = Date.now();
      });
      setTimeout(() => {
        if (res.destroyed) return;
        const body = JSON.stringify({ execution: execution.id, key, n });
        res.writeHead(201, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body, () => {
          execution.answered = Date.now();
        });
      }, work);
    });
  });
  server.keepAliveTimeout = 30_000;
  server.listen(Number(process.env.LEDGER_PORT ?? 0), HOST, () => {
    process.stdout.write(`ledger listening ${server.address().port}\n`);
  });
  // The harness owns this process; if it goes away, so does the ledger.
  process.on('disconnect', () => process.exit(0));
}

/**
 * Spawns the ledger as its own process and resolves once it listens.
 * @param {{ slowRate?: number, slowMs?: number, workMinMs?: number, workMaxMs?: number, seed?: number }} options
 */
export async function startLedger({ slowRate = 0, slowMs = 1_500, workMinMs = 20, workMaxMs = 60, seed = 1 } = {}) {
  const child = spawnTracked(process.execPath, [fileURLToPath(import.meta.url)], {
    stdio: ['ignore', 'pipe', 'inherit', 'ipc'],
    env: {
      ...process.env,
      LEDGER_SLOW_RATE: String(slowRate),
      LEDGER_SLOW_MS: String(slowMs),
      LEDGER_WORK_MIN_MS: String(workMinMs),
      LEDGER_WORK_MAX_MS: String(workMaxMs),
      LEDGER_SEED: String(seed),
    },
  });
  const port = await new Promise((resolve, reject) => {
    onLines(child.stdout, (line) => {
      const match = /^ledger listening (\d+)$/.exec(line);
      if (match) resolve(Number(match[1]));
    });
    child.once('exit', (code) => reject(new Error(`ledger exited with ${code} before listening`)));
    setTimeout(() => reject(new Error('ledger did not start within 10 s')), 10_000).unref();
  });
  const url = `http://${HOST}:${port}`;
  return {
    url,
    child,
    /** Every execution so far. */
    async executions() {
      const response = await fetch(`${url}/ledger`);
      return (await response.json()).executions;
    },
    async close() {
      child.kill('SIGKILL');
      await child.exited;
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) serve();
