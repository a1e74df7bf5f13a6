/**
 * `npm run bench`: every case of cases.js, each in a fresh server process with an emptied store,
 * driven by autocannon in another process, several times, round-robin so that a slow minute of
 * the machine spreads over all cases rather than landing on one. Writes medians to
 * bench/results/ (RESULTS.md, results.json, chart.svg/png).
 *
 *   node bench/run.js [--quick] [--runs N] [--duration S] [--warmup S] [--connections N]
 *                     [--only REGEX] [--profile] [--wait-quiet S] [--out DIR]
 */
import { fork } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { allCases } from './cases.js';
import { machine } from './lib/machine.js';
import { writeReport } from './lib/report.js';
import {
  commandsPerRequest,
  emptyPostgres,
  emptyRedis,
  harnessRedis,
  preparePostgres,
  redisCommandCalls,
} from './lib/stores.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string' },
    duration: { type: 'string' },
    warmup: { type: 'string' },
    connections: { type: 'string', default: '20' },
    rate: { type: 'string', default: '2000' },
    paced: { type: 'string' },
    pool: { type: 'string', default: '1000' },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    'wait-quiet': { type: 'string', default: '0' },
    out: { type: 'string' },
    from: { type: 'string' },
  },
});

const config = {
  runs: Number(args.runs ?? (args.quick ? 1 : 3)),
  duration: Number(args.duration ?? (args.quick ? 2 : 3)),
  pacedDuration: Number(args.paced ?? 2),
  pacedRate: Number(args.rate),
  warmup: Number(args.warmup ?? 1),
  connections: Number(args.connections),
  poolSize: Number(args.pool),
};
const partial = args.quick || args.only !== undefined || args.profile || args.runs !== undefined;
const outDir = args.out ?? (partial ? join(here, 'results', 'raw', 'partial') : join(here, 'results'));
const profileDir = join(here, 'results', 'raw', 'profiles');

function log(...parts) {
  console.log(`[${new Date().toISOString().slice(11, 19)}]`, ...parts);
}

// ─── child processes ──────────────────────────────────────────────────────────────────────────

function waitFor(child, type, timeoutMs, what) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`${what}: no '${type}' within ${timeoutMs} ms`));
    }, timeoutMs);
    const onMessage = (message) => {
      if (message.type === 'error') {
        cleanup();
        reject(new Error(`${what}: ${message.message}`));
      } else if (message.type === type) {
        cleanup();
        resolve(message);
      }
    };
    const onExit = (code) => {
      cleanup();
      reject(new Error(`${what} exited (${code}) before '${type}'${child.stderrTail ? `:\n${child.stderrTail}` : ''}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.off('message', onMessage);
      child.off('exit', onExit);
    };
    child.on('message', onMessage);
    child.on('exit', onExit);
  });
}

function spawnChild(script, argv, env = {}) {
  const child = fork(script, argv, {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, NODE_ENV: 'production', ...env },
    execArgv: [],
  });
  child.stderrTail = '';
  child.stderr.on('data', (chunk) => {
    child.stderrTail = (child.stderrTail + chunk.toString()).slice(-4000);
  });
  return child;
}

async function startHost(spec) {
  const child = spawnChild(join(here, 'lib', 'host.js'), [JSON.stringify(spec)]);
  const ready = await waitFor(child, 'ready', 30_000, `server ${spec.module}/${spec.variant}`);
  return { child, port: ready.port };
}

async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  try {
    child.send({ type: 'stop' });
  } catch {
    // Already gone.
  }
  const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
  await exited;
  clearTimeout(timer);
}

async function request(child, type, reply, what, timeoutMs = 30_000) {
  const answer = waitFor(child, reply, timeoutMs, what);
  child.send({ type });
  return answer;
}

async function loadPhase(load, loadConfig, phase, timeoutMs) {
  const answer = waitFor(load, 'done', timeoutMs, `load ${phase}`);
  load.send({ config: loadConfig, phase });
  return (await answer).result;
}

// ─── /proc/stat: how busy the whole machine was ───────────────────────────────────────────────

function machineBusyUs() {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
  const fields = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal: busy = all but idle and iowait.
  const busy = fields.slice(0, 8).reduce((sum, value, i) => (i === 3 || i === 4 ? sum : sum + value), 0);
  return (busy * 1_000_000) / 100; // USER_HZ is 100 on Linux.
}

function loadavg() {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

// ─── one run of one case ──────────────────────────────────────────────────────────────────────

let runCounter = 0;

async function runOnce(c, env) {
  const runId = `${Date.now().toString(36)}${(runCounter++).toString(36)}`;
  const usesRedis = c.store === 'redis';
  if (usesRedis) await emptyRedis(env.redis);
  if (c.store === 'postgres' || c.handler?.startsWith('insert-row')) await emptyPostgres();

  const children = [];
  try {
    let upstream;
    if (c.upstream) {
      upstream = await startHost({ module: 'proxy', variant: 'upstream', runId });
      children.push(upstream.child);
    }
    const upstreamPort = upstream?.port;
    const profile = args.profile ? join(profileDir, `${c.id.replace('/', '-')}.cpuprofile`) : undefined;
    const server = await startHost({
      module: c.module,
      variant: c.variant,
      store: c.store,
      runId,
      upstreamPort,
      ...(c.logLevel ? { logLevel: c.logLevel } : {}),
      ...(c.autoPipelining ? { autoPipelining: true } : {}),
      ...(c.redisClient ? { redisClient: c.redisClient } : {}),
      ...(c.fixedFingerprint ? { fixedFingerprint: true } : {}),
      ...(c.observe ? { observe: c.observe } : {}),
      ...(c.handler ? { handler: c.handler } : {}),
      ...(profile ? { profile } : {}),
    });
    children.push(server.child);
    const load = spawnChild(join(here, 'lib', 'load.js'), []);
    children.push(load);
    await waitFor(load, 'ready', 30_000, 'load generator');

    const loadConfig = {
      url: `http://127.0.0.1:${server.port}`,
      workload: c.workload,
      keyPrefix: `ibench:k:${runId}:`,
      poolSize: config.poolSize,
      connections: config.connections,
      duration: config.duration,
      warmup: config.warmup,
      pacedDuration: config.pacedDuration,
      pacedRate: config.pacedRate,
    };
    const phaseTimeout = (config.duration + config.warmup) * 1_000 + 60_000;
    let primed;
    if (c.workload === 'replay') {
      primed = await loadPhase(load, loadConfig, 'prime', phaseTimeout);
      if (primed.ok2xx !== config.poolSize) {
        throw new Error(
          `priming completed ${primed.ok2xx}/${config.poolSize} keys (${JSON.stringify(primed.statusCodes)})`,
        );
      }
    }
    await loadPhase(load, loadConfig, 'warmup', phaseTimeout);

    const loadBefore = loadavg();
    const redisBefore = usesRedis ? await redisCommandCalls(env.redis) : undefined;
    const busyBefore = machineBusyUs();
    const wallBefore = process.hrtime.bigint();
    const selfBefore = process.cpuUsage();
    if (upstream) await request(upstream.child, 'mark', 'marked', 'upstream mark');
    await request(server.child, 'mark', 'marked', 'server mark');
    const measured = await loadPhase(load, loadConfig, 'measure', phaseTimeout);
    const report = await request(server.child, 'report', 'report', 'server report');
    const upstreamReport = upstream ? await request(upstream.child, 'report', 'report', 'upstream report') : undefined;
    const busyUs = machineBusyUs() - busyBefore;
    const wallUs = Number(process.hrtime.bigint() - wallBefore) / 1_000;
    const selfUs = process.cpuUsage(selfBefore);
    const redisAfter = usesRedis ? await redisCommandCalls(env.redis) : undefined;

    let paced;
    if (config.pacedDuration > 0) {
      await request(server.child, 'mark', 'marked', 'server mark');
      const pacedLoad = await loadPhase(load, loadConfig, 'paced', phaseTimeout);
      const pacedReport = await request(server.child, 'report', 'report', 'server report');
      const pacedResponses = pacedLoad.ok2xx + pacedLoad.non2xx;
      paced = {
        pacedRps: pacedResponses / pacedLoad.duration,
        pacedCpuUsPerReq: (pacedReport.userUs + pacedReport.systemUs) / pacedResponses,
        pacedMainUsPerReq: pacedReport.mainUs / pacedResponses,
        pacedP50: pacedLoad.p50,
        // Below 95% of the asked rate the server was saturated, and the figure is not comparable.
        pacedValid: pacedResponses / pacedLoad.duration >= 0.95 * config.pacedRate && pacedLoad.non2xx === 0,
      };
    }

    const responses = measured.ok2xx + measured.non2xx;
    const serverCpuUs = report.userUs + report.systemUs;
    const result = {
      case: c.id,
      runId,
      rps: responses / measured.duration,
      p50: measured.p50,
      p99: measured.p99,
      mean: measured.mean,
      responses,
      non2xx: measured.non2xx,
      errors: measured.errors + measured.timeouts,
      statusCodes: measured.statusCodes,
      cpuUsPerReq: serverCpuUs / responses,
      mainUsPerReq: report.mainUs / responses,
      cpuUserUsPerReq: report.userUs / responses,
      cpuSystemUsPerReq: report.systemUs / responses,
      serverCores: serverCpuUs / report.elapsedUs,
      // Behind a proxy the route runs in the upstream.
      handlerRuns: (upstreamReport ?? report).handlerRuns,
      handlerRunsPerReq: (upstreamReport ?? report).handlerRuns / responses,
      ...(upstreamReport
        ? { upstreamCores: (upstreamReport.userUs + upstreamReport.systemUs) / upstreamReport.elapsedUs }
        : {}),
      machineBusyCores: busyUs / wallUs,
      loadgenCores: measured.cores,
      harnessCores: (selfUs.user + selfUs.system) / wallUs,
      loadavgAtStart: loadBefore,
      ...paced,
    };
    result.otherCores =
      result.machineBusyCores -
      result.serverCores -
      result.loadgenCores -
      result.harnessCores -
      (result.upstreamCores ?? 0);
    if (usesRedis) {
      const rt = commandsPerRequest(redisBefore, redisAfter, responses);
      result.redisCommandsPerReq = rt.commands;
      result.redisScriptsPerReq = rt.scripts;
      result.redisCpuUsPerReq = rt.cpuUsPerReq;
      result.redisPerCommand = rt.perCommand;
      // Counted inside the server process too (ioredis clients only): immune to other clients of the shared server.
      if (report.redisCommands > 0) result.clientRoundTripsPerReq = report.redisCommands / responses;
    }
    result.problems = problemsOf(c, result);
    return result;
  } finally {
    await Promise.all(children.reverse().map((child) => stopChild(child)));
  }
}

/** What makes a run's figures suspect: failed requests, or a workload that did not do what it says. */
function problemsOf(c, r) {
  const problems = [];
  if (r.errors > 0) problems.push(`${r.errors} socket errors/timeouts`);
  if (r.non2xx > 0) problems.push(`${r.non2xx} non-2xx (${JSON.stringify(r.statusCodes)})`);
  // Up to one request per connection may be in flight when the window closes: run, but not yet answered.
  const slack = 2 * config.connections;
  if (c.workload === 'fresh' && (r.handlerRuns < r.responses - slack || r.handlerRuns > r.responses + slack)) {
    problems.push(`handler ran ${r.handlerRuns} times for ${r.responses} fresh requests`);
  }
  if (c.workload === 'replay' && c.kind !== 'bare' && r.handlerRuns > slack) {
    problems.push(`handler ran ${r.handlerRuns} times for ${r.responses} replayed requests`);
  }
  return problems;
}

// ─── environment ──────────────────────────────────────────────────────────────────────────────

async function checkEnvironment() {
  const available = new Set();
  const notes = [];
  if (!existsSync(join(root, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  for (const [need, file] of [
    ['fastify-adapter', 'dist/adapters/fastify.js'],
    ['express-adapter', 'dist/adapters/express.js'],
  ]) {
    if (existsSync(join(root, file))) available.add(need);
    else notes.push(`${file} is not built: cases that need it are skipped`);
  }
  let redis;
  try {
    redis = await harnessRedis();
    await redis.ping();
    available.add('redis');
  } catch (error) {
    redis?.disconnect();
    redis = undefined;
    notes.push(`Redis unavailable (${error.message}): Redis cases skipped`);
  }
  try {
    await preparePostgres();
    available.add('postgres');
  } catch (error) {
    notes.push(`PostgreSQL unavailable (${error.message}): PostgreSQL cases skipped`);
  }
  return { available, notes, redis };
}

async function waitQuiet(maxSeconds) {
  const deadline = Date.now() + maxSeconds * 1_000;
  let load = loadavg();
  while (load >= 0.7 && Date.now() < deadline) {
    log(`waiting for a quiet machine: 1-min load ${load}`);
    await new Promise((resolve) => setTimeout(resolve, 15_000));
    load = loadavg();
  }
  return load;
}

// ─── main ─────────────────────────────────────────────────────────────────────────────────────

/** `--from results.json`: writes the report again from recorded runs, measuring nothing. */
function rerender(file) {
  const { meta, runs } = JSON.parse(readFileSync(file, 'utf8'));
  const recorded = new Set(runs.map((r) => r.case));
  const cases = allCases().filter((c) => recorded.has(c.id));
  const dir = args.out ?? dirname(file);
  log(`wrote ${writeReport({ outDir: dir, meta, cases, runs }).join(', ')}`);
}

async function main() {
  if (args.from) return rerender(args.from);
  const env = await checkEnvironment();
  for (const note of env.notes) log(`note: ${note}`);
  const only = args.only ? new RegExp(args.only) : undefined;
  const selected = allCases().filter((c) => !only || only.test(c.id));
  const cases = selected.filter((c) => (c.needs ?? []).every((need) => env.available.has(need)));
  const skipped = selected
    .filter((c) => !cases.includes(c))
    .map((c) => ({ case: c.id, missing: c.needs.filter((n) => !env.available.has(n)) }));
  if (args.profile) mkdirSync(profileDir, { recursive: true });

  const quietLoad = await waitQuiet(Number(args['wait-quiet']));
  const startedAt = new Date();
  // Described before the runs, so the commit is the one the measured dist/ was built from.
  const described = machine(root);
  log(
    `${cases.length} cases × ${config.runs} runs, ${config.duration}s each (+${config.warmup}s warm-up, +${config.pacedDuration}s at ${config.pacedRate} req/s), ${config.connections} connections; 1-min load ${quietLoad}`,
  );

  const runs = [];
  for (let rep = 0; rep < config.runs; rep++) {
    for (const c of cases) {
      try {
        const r = await runOnce(c, env);
        runs.push(r);
        log(
          `${rep + 1}/${config.runs} ${c.id.padEnd(34)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms  ${r.cpuUsPerReq.toFixed(1)} µs/req` +
            (r.pacedCpuUsPerReq === undefined
              ? ''
              : `  @${config.pacedRate}/s ${r.pacedCpuUsPerReq.toFixed(1)} µs/req${r.pacedValid ? '' : ' (saturated)'}`) +
            (r.clientRoundTripsPerReq !== undefined ? `  ${r.clientRoundTripsPerReq.toFixed(2)} redis rt/req` : '') +
            (r.redisCommandsPerReq !== undefined
              ? `  redis ran ${r.redisCommandsPerReq.toFixed(2)} cmds, ${r.redisCpuUsPerReq.toFixed(1)} µs/req`
              : '') +
            (r.problems.length ? `  ⚠ ${r.problems.join('; ')}` : ''),
        );
      } catch (error) {
        log(`${rep + 1}/${config.runs} ${c.id}: FAILED ${error.message}`);
        runs.push({ case: c.id, failed: String(error.message) });
      }
    }
  }
  env.redis?.disconnect();

  const finishedAt = new Date();
  const meta = {
    ...described,
    startedAt: startedAt.toISOString(),
    finishedAt: finishedAt.toISOString(),
    loadavgBefore: quietLoad,
    loadavgAfter: loadavg(),
    config,
    notes: env.notes,
    skipped,
    partial,
  };
  mkdirSync(outDir, { recursive: true });
  const written = writeReport({ outDir, meta, cases, runs });
  log(`wrote ${written.join(', ')}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
