/**
 * What bench/run.js and bench/ab.js share: the server and load-generator processes, one case
 * opened (servers started, store emptied, pool primed, warmed up), measured and closed, and the
 * check of what this machine can run.
 */
import { fork } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  commandsPerRequest,
  emptyPostgres,
  emptyRedis,
  harnessRedis,
  preparePostgres,
  redisCommandCalls,
} from './stores.js';

const here = dirname(fileURLToPath(import.meta.url));
const ROOT = join(here, '..', '..');

export function log(...parts) {
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

/**
 * A Node.js child on IPC. `wrap`, for a server measured under a tool: `command`, which runs Node
 * itself, with its arguments before Node's path (`['valgrind', '--tool=callgrind', …]`), and
 * `nodeArgs`, Node's own options.
 */
function spawnChild(script, argv, env = {}, wrap = undefined) {
  const child = fork(script, argv, {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: { ...process.env, NODE_ENV: 'production', ...env },
    ...(wrap
      ? { execPath: wrap.command[0], execArgv: [...wrap.command.slice(1), process.execPath, ...wrap.nodeArgs] }
      : { execArgv: [] }),
  });
  child.stderrTail = '';
  child.stderr.on('data', (chunk) => {
    child.stderrTail = (child.stderrTail + chunk.toString()).slice(-4000);
  });
  return child;
}

/** A server process for `spec`, run from the checkout at `root` (this one by default). */
async function startHost(spec, root = ROOT, wrap = undefined) {
  const child = spawnChild(join(root, 'bench', 'lib', 'host.js'), [JSON.stringify(spec)], {}, wrap);
  // Under a tool such as valgrind, starting takes many times longer.
  const ready = await waitFor(child, 'ready', wrap ? 300_000 : 30_000, `server ${spec.module}/${spec.variant}`);
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

export function loadavg() {
  return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
}

// ─── one run of one case ──────────────────────────────────────────────────────────────────────

let runCounter = 0;

/**
 * Starts one case: its store emptied (unless `emptied`), its server (and upstream) and a load
 * generator, the replay pool primed and the warm-up run. `closeCase()` stops what it started.
 * `root`: another checkout (built) whose bench servers and idempo build the server runs, to
 * compare two builds of the same case. `wrapServer`: a command the server's Node runs under (see
 * `spawnChild`).
 */
export async function openCase(c, env, config, { profile, emptied = false, root, wrapServer } = {}) {
  const runId = `${Date.now().toString(36)}${(runCounter++).toString(36)}`;
  if (!emptied) await emptyStoresFor(c, env);
  const opened = { c, runId, children: [] };
  try {
    if (c.upstream) {
      opened.upstream = await startHost({ module: 'proxy', variant: 'upstream', runId }, root);
      opened.children.push(opened.upstream.child);
    }
    opened.server = await startHost(
      {
        module: c.module,
        variant: c.variant,
        store: c.store,
        runId,
        upstreamPort: opened.upstream?.port,
        ...(c.logLevel ? { logLevel: c.logLevel } : {}),
        ...(c.autoPipelining ? { autoPipelining: true } : {}),
        ...(c.redisClient ? { redisClient: c.redisClient } : {}),
        ...(c.fixedFingerprint ? { fixedFingerprint: true } : {}),
        ...(c.observe ? { observe: c.observe } : {}),
        ...(c.handler ? { handler: c.handler } : {}),
        ...(profile ? { profile } : {}),
      },
      root,
      wrapServer,
    );
    opened.children.push(opened.server.child);
    opened.load = spawnChild(join(here, 'load.js'), []);
    opened.children.push(opened.load);
    await waitFor(opened.load, 'ready', 30_000, 'load generator');

    opened.loadConfig = {
      url: `http://127.0.0.1:${opened.server.port}`,
      workload: c.workload,
      keyPrefix: `ibench:k:${runId}:`,
      poolSize: config.poolSize,
      connections: config.connections,
      duration: config.duration,
      warmup: config.warmup,
      pacedDuration: config.pacedDuration,
      pacedRate: config.pacedRate,
    };
    opened.phaseTimeout = (config.duration + config.warmup) * 1_000 + 60_000;
    if (c.workload === 'replay') {
      const primed = await loadPhase(opened.load, opened.loadConfig, 'prime', opened.phaseTimeout);
      if (primed.ok2xx !== config.poolSize) {
        throw new Error(
          `priming completed ${primed.ok2xx}/${config.poolSize} keys (${JSON.stringify(primed.statusCodes)})`,
        );
      }
    }
    await loadPhase(opened.load, opened.loadConfig, 'warmup', opened.phaseTimeout);
    return opened;
  } catch (error) {
    await closeCase(opened);
    throw error;
  }
}

/** Empties what a case's store keeps from earlier runs (the bench's own keys and tables only). */
export async function emptyStoresFor(c, env) {
  if (c.store === 'redis') await emptyRedis(env.redis);
  if (c.store === 'postgres' || c.handler?.startsWith('insert-row')) await emptyPostgres();
}

/** Stops a case's processes. */
export async function closeCase(opened) {
  await Promise.all([...opened.children].reverse().map((child) => stopChild(child)));
}

/**
 * One measured window of an opened case (`config.duration` seconds at `config.connections`),
 * then `config.pacedDuration` seconds at the fixed rate when that is above 0. `window.open()` and
 * `window.close()`, when given, run right after the server marks the saturated window's start and
 * right before it reports (to turn an instrument on and off around exactly the load).
 */
export async function measureCase(opened, env, config, window = undefined) {
  const { c, runId, upstream, server, load, loadConfig, phaseTimeout } = opened;
  // Side by side, a case can sit idle for a minute between its slices while the baseline, measured
  // every few slices, stays busy; the load resumes, unmeasured, before the window opens.
  if (config.sliceWarmup > 0) {
    await loadPhase(load, { ...loadConfig, warmup: config.sliceWarmup }, 'warmup', phaseTimeout);
  }
  const usesRedis = c.store === 'redis';
  const loadBefore = loadavg();
  const redisBefore = usesRedis ? await redisCommandCalls(env.redis) : undefined;
  const busyBefore = machineBusyUs();
  const wallBefore = process.hrtime.bigint();
  const selfBefore = process.cpuUsage();
  if (upstream) await request(upstream.child, 'mark', 'marked', 'upstream mark');
  await request(server.child, 'mark', 'marked', 'server mark');
  await window?.open();
  const measured = await loadPhase(load, { ...loadConfig, duration: config.duration }, 'measure', phaseTimeout);
  await window?.close();
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
  result.problems = problemsOf(c, result, config);
  return result;
}

/** One run of one case: opened, measured once, closed. */
export async function runOnce(c, env, config, options = {}) {
  const opened = await openCase(c, env, config, options);
  try {
    return await measureCase(opened, env, config);
  } finally {
    await closeCase(opened);
  }
}

/** What makes a run's figures suspect: failed requests, or a workload that did not do what it says. */
function problemsOf(c, r, config) {
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

/** What case `c` needs (a built adapter, Redis, PostgreSQL) that `env` does not have. */
export function missingNeeds(c, env) {
  return (c.needs ?? []).filter((need) => !env.available.has(need));
}

/** Throws, naming what is missing, unless `env` has what every one of `cases` needs. */
export function requireNeeds(cases, env) {
  for (const c of cases) {
    const missing = missingNeeds(c, env);
    if (missing.length > 0) throw new Error(`${c.id} needs ${missing.join(', ')}: ${env.notes.join('; ')}`);
  }
}

export async function checkEnvironment() {
  const available = new Set();
  const notes = [];
  if (!existsSync(join(ROOT, 'dist', 'index.js'))) throw new Error('dist/ is missing: run `npm run build` first');
  for (const [need, file] of [
    ['fastify-adapter', 'dist/adapters/fastify.js'],
    ['express-adapter', 'dist/adapters/express.js'],
  ]) {
    if (existsSync(join(ROOT, file))) available.add(need);
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
