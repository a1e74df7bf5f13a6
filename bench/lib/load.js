/**
 * The load generator process: autocannon, driven by the harness over IPC. Each request carries an
 * `Idempotency-Key` set in `setupRequest`: a new one every time (`fresh`: the execute path), or
 * the next one of a pool the `prime` phase completed first (`replay`: the replay path). Keys are
 * `ibench:k:<run>:…`, so the Redis keys of peers that store them raw stay under the bench prefix.
 */
import autocannon from 'autocannon';
import { REQUEST_BODY, ROUTE } from './app.js';

let issued = 0;

function requestsFor({ workload, keyPrefix, poolSize }, phase) {
  const headers = { 'content-type': 'application/json' };
  let setupRequest;
  if (phase === 'prime') {
    let next = 0;
    setupRequest = (req) => {
      req.headers['idempotency-key'] = `${keyPrefix}p${next++ % poolSize}`;
      return req;
    };
  } else if (workload === 'replay') {
    setupRequest = (req) => {
      req.headers['idempotency-key'] = `${keyPrefix}p${issued++ % poolSize}`;
      return req;
    };
  } else {
    setupRequest = (req) => {
      req.headers['idempotency-key'] = `${keyPrefix}${issued++}`;
      return req;
    };
  }
  return [{ method: 'POST', path: ROUTE, headers, body: REQUEST_BODY, setupRequest }];
}

function run(options) {
  return new Promise((resolve, reject) => {
    autocannon(options, (error, result) => (error ? reject(error) : resolve(result)));
  });
}

process.on('message', async (message) => {
  if (message.type === 'stop') process.exit(0);
  try {
    const { config, phase } = message;
    const base = { url: config.url, requests: requestsFor(config, phase), pipelining: 1, timeout: 10 };
    let result;
    const cpuBefore = process.cpuUsage();
    const wallBefore = process.hrtime.bigint();
    if (phase === 'prime') {
      // One connection, so each pool key is completed before any other request could see it in flight.
      result = await run({ ...base, connections: 1, amount: config.poolSize });
    } else if (phase === 'paced') {
      // A fixed request rate, the same for every variant: the server's CPU per request then does
      // not depend on how many requests each wake-up of its event loop finds waiting.
      result = await run({
        ...base,
        connections: config.connections,
        duration: config.pacedDuration,
        overallRate: config.pacedRate,
      });
    } else {
      result = await run({
        ...base,
        connections: config.connections,
        duration: phase === 'warmup' ? config.warmup : config.duration,
      });
    }
    const cpu = process.cpuUsage(cpuBefore);
    const wallUs = Number(process.hrtime.bigint() - wallBefore) / 1_000;
    process.send({
      type: 'done',
      phase,
      result: {
        cores: (cpu.user + cpu.system) / wallUs,
        duration: result.duration,
        total: result.requests.total,
        ok2xx: result['2xx'],
        non2xx: result.non2xx,
        errors: result.errors,
        timeouts: result.timeouts,
        rps: result.requests.average,
        p50: result.latency.p50,
        p99: result.latency.p99,
        mean: result.latency.average,
        statusCodes: result.statusCodeStats,
      },
    });
  } catch (error) {
    process.send({ type: 'error', message: String(error?.stack ?? error) });
  }
});

process.send({ type: 'ready' });
