// One chaos scenario, end to end: a ledger upstream, N instances on one store (gateway processes or
// library-mode apps), a lossy balancer in front, clients that retry each operation with one key
// until they get a final answer (some abandoning attempts 5–40 ms in), instances SIGKILLed and
// restarted, the private store stopped hard and restarted. Then every key gets a final retry
// straight to an instance, long after the lease, and the ledger is read back and judged
// (analysis.js). Everything it starts goes through procs.js and is ended in `finally`.
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { seededRandom } from '../../examples/client/lossy-proxy.js';
import { analyse } from './analysis.js';
import { startBalancer } from './balancer.js';
import { startRedisCluster } from './failover.js';
import { startLedger } from './ledger.js';
import { startPostgresFailover } from './postgres-failover.js';
import {
  cleanupAll,
  freePort,
  killHard,
  onLines,
  ROOT,
  sleep,
  spawnTracked,
  startPostgres,
  startRedis,
  tempDir,
} from './procs.js';

const CLI = join(ROOT, 'dist/gateway/cli.js');
const APP = fileURLToPath(new URL('./app.js', import.meta.url));
const runFile = promisify(execFile);
const ROUTINE_EVENTS = new Set(['executed', 'replayed', 'conflict']);

function ms(duration) {
  const match = /^(\d+(?:\.\d+)?)(ms|s)?$/.exec(String(duration));
  if (!match) throw new Error(`bad duration ${duration}`);
  return Number(match[1]) * (match[2] === 's' ? 1_000 : 1);
}

/** The table comes from an explicit migration, as in production. */
function migrate(url) {
  return runFile(process.execPath, [CLI, 'migrate', '--store', url], { cwd: ROOT, timeout: 30_000 });
}

/** The private store of a scenario, or the shared SQLite file. */
async function startStore(kind, config) {
  if (kind === 'sqlite') {
    const dir = tempDir('idempo-chaos-sqlite-');
    return { kind, url: `sqlite:${join(dir, 'chaos.db')}`, running: true, outages: false };
  }
  if (kind === 'redis-cluster') return startRedisCluster();
  if (kind === 'postgres-failover')
    return startPostgresFailover({
      synchronous: config.synchronousStandby === true,
      replicationDelayMs: config.replicationDelayMs,
      migrate,
    });
  const server = kind === 'redis' ? await startRedis() : await startPostgres();
  if (kind === 'postgres') await migrate(server.url);
  return Object.assign(server, { outages: true });
}

/** The key a store keeps for a client's Idempotency-Key (no scope), as the engine derives it. */
async function storeKeyOf() {
  const { storeKeyFor } = await import('../../dist/engine/fingerprint.js');
  return (key) => storeKeyFor(key, undefined);
}

/** One instance slot: a fixed port, a generation bumped at each kill, a process when up. */
function makeSlot(index, port) {
  return {
    index,
    port,
    generation: 0,
    up: false,
    child: undefined,
    events: {},
    /** Non-routine idempotency events per key, as the instance logged them: evidence for the judge. */
    keyEvents: [],
    startFailures: 0,
    lastStderr: '',
  };
}

async function startSlot(slot, config, storeUrl, ledgerUrl) {
  const instanceId = `${slot.index}:${slot.generation}`;
  const [file, args, env, ready] =
    config.mode === 'gateway'
      ? [
          process.execPath,
          [
            CLI,
            'serve',
            '--upstream',
            ledgerUrl,
            '--port',
            String(slot.port),
            '--store',
            storeUrl,
            '--lease',
            config.lease,
            '--upstream-timeout',
            config.upstreamTimeout,
            '--drain-timeout',
            '2s',
            ...(config.gatewayArgs ?? []),
          ],
          { LOG_LEVEL: 'info' },
          'idempo gateway listening',
        ]
      : [
          process.execPath,
          [APP],
          {
            CHAOS_PORT: String(slot.port),
            CHAOS_STORE: storeUrl,
            CHAOS_LEDGER: ledgerUrl,
            CHAOS_INSTANCE: instanceId,
            CHAOS_LEASE: config.lease,
            CHAOS_REPLICA_ACK: config.replicaAck ? '1' : '',
            CHAOS_SYNCHRONOUS_COMMIT: config.synchronousCommit ?? '',
          },
          null,
        ];
  const child = spawnTracked(file, args, { cwd: ROOT, env: { ...process.env, ...env } });
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-2_000);
  });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`instance ${instanceId} did not start within 15 s`)), 15_000);
    onLines(child.stdout, (line) => {
      if (line[0] !== '{') {
        if (line.startsWith('app listening')) {
          clearTimeout(timer);
          resolve();
        }
        return;
      }
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (ready && entry.msg === ready) {
        clearTimeout(timer);
        resolve();
        return;
      }
      if (typeof entry.msg === 'string' && entry.msg.startsWith('idempotency ') && entry.type) {
        const name = entry.action
          ? `${entry.type}/${entry.action}`
          : entry.reason
            ? `${entry.type}/${entry.reason}`
            : entry.type;
        slot.events[name] = (slot.events[name] ?? 0) + 1;
        if (entry.key && !ROUTINE_EVENTS.has(entry.type))
          slot.keyEvents.push({
            key: entry.key,
            instance: instanceId,
            t: Date.now(),
            event: name,
            status: entry.status,
          });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`instance ${instanceId} exited (${code ?? signal}) before listening: ${stderr.trim()}`));
    });
  }).catch((error) => {
    slot.lastStderr = stderr.trim();
    child.kill('SIGKILL');
    throw error;
  });
  slot.child = child;
  slot.up = true;
}

/** Starts a slot, trying again every 500 ms until `deadline` (e.g. a gateway booting while its store is down). */
async function startSlotRetrying(slot, config, storeUrl, ledgerUrl, deadline) {
  for (;;) {
    try {
      await startSlot(slot, config, storeUrl, ledgerUrl);
      return true;
    } catch {
      slot.startFailures += 1;
      if (Date.now() > deadline) return false;
      await sleep(500);
    }
  }
}

/** One logical operation: the same key and body until a final answer, bounded in attempts and time. */
async function runOperation(op, target, config, random, stopAt) {
  const started = Date.now();
  for (let n = 1; n <= config.maxAttempts; n++) {
    if (Date.now() - started > config.opBudgetMs || Date.now() > stopAt) break;
    const abandon = random() < config.abandonRate;
    const controller = new AbortController();
    const timer = setTimeout(
      () => controller.abort(),
      abandon ? 5 + Math.floor(random() * 36) : config.attemptTimeoutMs,
    );
    const attempt = {
      n,
      t: Date.now(),
      abandoned: abandon,
      status: null,
      execution: null,
      replayed: false,
      error: null,
    };
    op.attempts.push(attempt);
    let delay = Math.min(50 * 2 ** (n - 1), 1_000);
    try {
      const response = await fetch(`${target}/pay`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': op.key, 'x-chaos-attempt': String(n) },
        body: op.body,
        signal: controller.signal,
      });
      const text = await response.text();
      attempt.done = Date.now();
      attempt.status = response.status;
      attempt.replayed = response.headers.get('idempotent-replayed') === 'true';
      if (response.status >= 200 && response.status < 300) {
        attempt.execution = executionOf(text);
        op.outcome = 'success';
        return;
      }
      attempt.code = codeOf(text);
      if (response.status !== 409 && response.status !== 429 && response.status < 500) {
        op.outcome = `final ${response.status}`;
        return;
      }
      const retryAfter = Number(response.headers.get('retry-after'));
      if (retryAfter > 0) delay = Math.min(retryAfter * 1_000, config.maxRetryAfterMs);
    } catch (error) {
      attempt.error = abandon ? 'abandoned' : String(error.cause?.code ?? error.name ?? error);
    } finally {
      clearTimeout(timer);
    }
    await sleep(delay);
  }
  op.outcome = 'gave up';
}

function executionOf(text) {
  try {
    return JSON.parse(text).execution ?? null;
  } catch {
    return null;
  }
}

function codeOf(text) {
  try {
    const body = JSON.parse(text);
    return body.code ?? body.type ?? null;
  } catch {
    return null;
  }
}

/** The final retry of a key, straight to an instance: until a non-409 answer or `windowMs`. */
async function finalRetry(op, slots, windowMs) {
  const started = Date.now();
  let i = 0;
  for (;;) {
    const slot = slots[(op.index + i++) % slots.length];
    const record = { t: Date.now(), status: null, execution: null, replayed: false, error: null };
    try {
      const response = await fetch(`http://127.0.0.1:${slot.port}/pay`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'idempotency-key': op.key,
          'x-chaos-attempt': 'final',
          'x-chaos-instance': `${slot.index}:${slot.generation}`,
        },
        body: op.body,
        signal: AbortSignal.timeout(10_000),
      });
      const text = await response.text();
      record.status = response.status;
      record.replayed = response.headers.get('idempotent-replayed') === 'true';
      if (response.status >= 200 && response.status < 300) record.execution = executionOf(text);
      else record.code = codeOf(text);
    } catch (error) {
      record.error = String(error.cause?.code ?? error.name ?? error);
    }
    op.final = record;
    const retryable = record.error !== null || record.status === 409 || record.status === 503;
    if (!retryable || Date.now() - started > windowMs) return;
    await sleep(500);
  }
}

/** Runs `worker` over `items` with at most `limit` at a time. */
async function pool(items, limit, worker) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await worker(items[next++]);
    }),
  );
}

/**
 * Runs one scenario and returns its figures and evidence.
 * @param {object} config  a scenario from scenarios.js, with its sizes resolved
 * @param {(line: string) => void} log
 */
export async function runScenario(config, log = () => {}) {
  const startedAt = Date.now();
  const random = seededRandom(config.seed);
  const kills = [];
  const outages = [];
  const faults = [];
  const restartFailures = [];
  let slots = [];
  let balancer;
  let store;
  try {
    store = await startStore(config.store, config);
    const ledger = await startLedger({
      slowRate: config.slowRate,
      slowMs: config.slowMs,
      seed: config.seed + 1,
    });
    slots = await Promise.all(Array.from({ length: config.instances }, async (_, i) => makeSlot(i, await freePort())));
    await Promise.all(slots.map((slot) => startSlot(slot, config, store.url, ledger.url)));
    balancer = await startBalancer({ instances: slots, dropRate: config.dropRate, seed: config.seed + 2 });
    log(`  up: ${config.instances} ${config.mode} instances on ${store.url}, ledger ${ledger.url}`);

    // Load: operations started at an even pace over the duration, each retried to a final answer.
    const loadStartedAt = Date.now();
    const runId = loadStartedAt.toString(36);
    const ops = Array.from({ length: config.ops }, (_, index) => ({
      index,
      key: `chaos-${config.name}-${runId}-${index}`,
      body: JSON.stringify({ op: index, amount: 1_000 + ((index * 737) % 9_000), currency: 'eur' }),
      attempts: [],
      outcome: 'not started',
      final: null,
    }));
    const stopAt = loadStartedAt + config.durationMs + config.opBudgetMs;
    let loadDone = false;
    const pace = config.durationMs / config.ops;
    const load = Promise.all(
      ops.map(async (op) => {
        await sleep(op.index * pace);
        // Timers slip on a busy machine; past the duration (and some slack) no operation starts.
        if (Date.now() > loadStartedAt + config.durationMs + 5_000) return;
        await runOperation(op, balancer.url, config, seededRandom(config.seed * 7919 + op.index), stopAt);
      }),
    ).then(() => {
      loadDone = true;
    });

    const restartDeadline = () => Date.now() + 30_000;
    const killLoop = (async () => {
      if (!config.killEveryMs) return;
      while (!loadDone) {
        await sleep(config.killEveryMs * (0.5 + random()));
        if (loadDone) break;
        const candidates = slots.filter((slot) => slot.up);
        if (candidates.length === 0) continue;
        const slot = candidates[Math.floor(random() * candidates.length)];
        const instance = `${slot.index}:${slot.generation}`;
        slot.up = false;
        slot.generation += 1;
        const child = slot.child;
        kills.push({ instance, t: Date.now() });
        await killHard(child);
        await sleep(config.restartAfterMs);
        if (!(await startSlotRetrying(slot, config, store.url, ledger.url, restartDeadline())))
          restartFailures.push(`${slot.index}:${slot.generation}: ${slot.lastStderr.split('\n').pop()}`);
      }
    })();
    const storeLoop = (async () => {
      if (!config.storeOutageEveryMs || !store.outages) return;
      while (!loadDone) {
        await sleep(config.storeOutageEveryMs * (0.5 + random()));
        if (loadDone) break;
        if (config.fault) {
          // A failover fault: an outage of one shard from the fault until it serves again.
          const outage = { start: Date.now(), end: null };
          outages.push(outage);
          const event = await store.fault(config.fault, random, {
            stallMs: config.storeDownMs,
            promoteAfterMs: config.promoteAfterMs,
          });
          outage.end = event.released;
          faults.push(event);
          continue;
        }
        const outage = { start: Date.now(), end: null };
        outages.push(outage);
        await store.stopHard();
        await sleep(config.storeDownMs);
        await store.start();
        outage.end = Date.now();
      }
    })();
    await load;
    await Promise.all([killLoop, storeLoop]);
    const loadEndedAt = Date.now();
    log(
      `  load done in ${((loadEndedAt - loadStartedAt) / 1_000).toFixed(1)} s; ${kills.length} kills, ${outages.length} store outages`,
    );

    // Everything back up, then the final retries, long after the lease.
    if (!store.running) await store.start();
    for (const slot of slots) {
      if (!slot.up && !(await startSlotRetrying(slot, config, store.url, ledger.url, restartDeadline())))
        restartFailures.push(`${slot.index}:${slot.generation}: ${slot.lastStderr.split('\n').pop()}`);
    }
    const quietUntil = Date.now() + 15_000;
    while (Date.now() < quietUntil) {
      const open = (await ledger.executions()).filter((e) => e.answered === null && e.hungUp === null);
      if (open.length === 0) break;
      await sleep(200);
    }
    await sleep(ms(config.lease) + 500);
    const upSlots = slots.filter((slot) => slot.up);
    if (upSlots.length > 0)
      await pool(
        ops.filter((op) => op.outcome !== 'not started'),
        32,
        (op) => finalRetry(op, upSlots, config.finalWindowMs),
      );
    const executions = await ledger.executions();
    // A PostgreSQL failover's evidence: which keys' writes the crashed primaries had and the
    // promoted standbys did not (postgres-failover.js), by the clients' keys.
    let lostWrites;
    let promotionLosses;
    if (store.lostWrites)
      lostWrites = await store.lostWrites().catch((error) => {
        // Without it the control's duplicates go unexplained; the run itself still counts.
        log(`  could not read the crashed primaries back: ${error?.message ?? error}`);
        return undefined;
      });
    if (lostWrites) {
      const storeKey = await storeKeyOf();
      const byStoreKey = new Map(ops.map((op) => [storeKey(op.key), op.key]));
      promotionLosses = new Map();
      for (const write of lostWrites) {
        const key = byStoreKey.get(write.key);
        if (key === undefined) continue;
        promotionLosses.set(key, [...(promotionLosses.get(key) ?? []), write]);
      }
    }
    const figures = analyse({
      config,
      ops,
      executions,
      kills,
      outages,
      startedAt: loadStartedAt,
      keyEvents: slots.flatMap((slot) => slot.keyEvents),
      upstreamTimeoutMs: ms(config.upstreamTimeout),
      promotionLosses,
    });
    return {
      name: config.name,
      control: config.control === true,
      mode: config.mode,
      store: config.store,
      seconds: Math.round((Date.now() - startedAt) / 1_000),
      ...figures,
      chaos: {
        kills: kills.length,
        storeOutages: outages.length,
        restartFailures,
        instanceStartFailures: slots.reduce((sum, slot) => sum + slot.startFailures, 0),
        balancer: balancer.stats(),
      },
      instanceEvents: mergeEvents(slots),
      ...(config.fault ? { failover: failoverFigures(ops, faults, loadStartedAt, lostWrites) } : {}),
    };
  } finally {
    await balancer?.close();
    await store?.close?.();
    await cleanupAll();
  }
}

const quantile = (sorted, q) =>
  sorted.length === 0 ? null : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];

/**
 * What clients saw around each failover fault: the window from the fault to the last `503`/`409`
 * answered before the next fault (how long clients were turned away; the `409`s include keys held
 * in flight while their owner retried a write, or for a lease when a claim's outcome was unknown),
 * the same to the last `503` only (how long the store was unreachable for the apps), and the
 * cost of the option, against the same scenario without it: the latency of the attempts that ran
 * the work and succeeded, all of them and those clear of every fault (from its start until the
 * store was whole again, `end`), and operations completed per second of load. The load is paced,
 * so that rate shows what the faults cost, not what the store could do.
 * With `lostWrites` (PostgreSQL): per fault, the writes the crashed primary had and the promoted
 * standby did not.
 */
function failoverFigures(ops, faults, loadStartedAt, lostWrites) {
  const attempts = ops.flatMap((op) => op.attempts).filter((a) => a.done !== undefined);
  const lostCounts = (fault) => {
    if (!lostWrites) return undefined;
    const counts = {};
    for (const write of lostWrites)
      if (fault === undefined || write.fault === fault) counts[write.what] = (counts[write.what] ?? 0) + 1;
    return counts;
  };
  const windows = faults.map((fault, i) => {
    const until = faults[i + 1]?.start ?? Number.POSITIVE_INFINITY;
    // By when the refusal came: an attempt made just before the next fault and refused because of
    // it belongs to that fault, not to this one.
    const refused = attempts.filter(
      (a) => (a.status === 503 || a.status === 409) && a.done >= fault.start && a.done < until,
    );
    const last = Math.max(fault.start, ...refused.map((a) => a.done));
    const last503 = Math.max(fault.start, ...refused.filter((a) => a.status === 503).map((a) => a.done));
    return {
      kind: fault.kind,
      windowMs: last - fault.start,
      window503Ms: last503 - fault.start,
      promotedMs: fault.promotedAt === null ? null : fault.promotedAt - fault.start,
      ...(fault.released ? { releasedMs: fault.released - fault.start } : {}),
      ...(fault.end ? { wholeAgainMs: fault.end - fault.start } : {}),
      refused503: refused.filter((a) => a.status === 503).length,
      refused409: refused.filter((a) => a.status === 409).length,
      /** The refusals by problem code, and when (after the fault) the last one of each was answered. */
      refusedCodes: Object.fromEntries(
        [...new Set(refused.map((a) => a.code ?? String(a.status)))].map((code) => {
          const of = refused.filter((a) => (a.code ?? String(a.status)) === code);
          return [code, { n: of.length, lastMs: Math.max(...of.map((a) => a.done)) - fault.start }];
        }),
      ),
      ...(lostWrites ? { lostWrites: lostCounts(i) } : {}),
    };
  });
  const sortedWindows = windows.map((w) => w.windowMs).sort((a, b) => a - b);
  const sorted503 = windows.map((w) => w.window503Ms).sort((a, b) => a - b);
  const ran = attempts.filter((a) => a.status >= 200 && a.status < 300 && !a.replayed);
  const latencies = ran.map((a) => a.done - a.t).sort((a, b) => a - b);
  const clear = ran
    .filter((a) => !faults.some((f) => a.done >= f.start && a.t <= (f.end ?? Number.POSITIVE_INFINITY)))
    .map((a) => a.done - a.t)
    .sort((a, b) => a - b);
  const succeeded = ops.filter((op) => op.outcome === 'success');
  const lastSuccess = Math.max(
    loadStartedAt,
    ...succeeded.map((op) => op.attempts.findLast((a) => a.status >= 200 && a.status < 300)?.done ?? loadStartedAt),
  );
  return {
    faults: faults.length,
    promotions: faults.filter((f) => f.promotedAt !== null).length,
    windowMedianMs: quantile(sortedWindows, 0.5),
    windowMaxMs: sortedWindows.at(-1) ?? null,
    window503MedianMs: quantile(sorted503, 0.5),
    window503MaxMs: sorted503.at(-1) ?? null,
    answers503: attempts.filter((a) => a.status === 503).length,
    answers409: attempts.filter((a) => a.status === 409).length,
    latencyP50Ms: quantile(latencies, 0.5),
    latencyP99Ms: quantile(latencies, 0.99),
    clearLatencyP50Ms: quantile(clear, 0.5),
    clearLatencyP99Ms: quantile(clear, 0.99),
    completedPerSecond:
      lastSuccess > loadStartedAt
        ? Math.round((succeeded.length / ((lastSuccess - loadStartedAt) / 1_000)) * 10) / 10
        : 0,
    ...(lostWrites ? { lostWrites: lostCounts(undefined) } : {}),
    windows,
  };
}

function mergeEvents(slots) {
  const out = {};
  for (const slot of slots) for (const [name, n] of Object.entries(slot.events)) out[name] = (out[name] ?? 0) + n;
  return out;
}
