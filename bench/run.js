/**
 * `npm run bench`: every case of cases.js, each in a fresh server process with an emptied store,
 * driven by autocannon in another process, several times, round-robin so that a slow minute of
 * the machine spreads over all cases rather than landing on one. Writes medians to
 * bench/results/ (RESULTS.md, results.json, chart.svg/png).
 *
 *   node bench/run.js [--quick] [--runs N] [--duration S] [--warmup S] [--connections N]
 *                     [--only REGEX] [--profile] [--wait-quiet S] [--out DIR] [--side-by-side]
 *                     [--slice-warmup S]
 *
 * `--side-by-side` opens the cases of one framework and workload together and takes the runs as
 * alternating slices (see measureSideBySide; 6 slices of 2 s unless --runs and --duration say
 * otherwise), each after `--slice-warmup` seconds of unmeasured load (default 1), and judges the
 * targets on the slices' paired ratios.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { allCases } from './cases.js';
import { parseToolArgs } from './lib/cli.js';
import {
  checkEnvironment,
  closeCase,
  emptyStoresFor,
  loadavg,
  log,
  measureCase,
  missingNeeds,
  openCase,
  runOnce,
} from './lib/harness.js';
import { machine } from './lib/machine.js';
import { writeReport } from './lib/report.js';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..');

const { values: args } = parseToolArgs(import.meta.url, {
  options: {
    quick: { type: 'boolean', default: false },
    runs: { type: 'string', number: 'count' },
    duration: { type: 'string', number: 'positive' },
    warmup: { type: 'string', number: 'seconds' },
    'slice-warmup': { type: 'string', number: 'seconds' },
    connections: { type: 'string', default: '20', number: 'count' },
    rate: { type: 'string', default: '2000', number: 'count' },
    paced: { type: 'string', number: 'seconds' },
    pool: { type: 'string', default: '1000', number: 'count' },
    only: { type: 'string' },
    profile: { type: 'boolean', default: false },
    'wait-quiet': { type: 'string', default: '0', number: 'seconds' },
    'side-by-side': { type: 'boolean', default: false },
    out: { type: 'string' },
    from: { type: 'string' },
  },
});

// Side by side, a run is a slice: more of them, shorter, so each case meets its baseline often.
const sideBySide = args['side-by-side'];
const config = {
  runs: args.runs ?? (args.quick ? 1 : sideBySide ? 6 : 3),
  duration: args.duration ?? (args.quick || sideBySide ? 2 : 3),
  pacedDuration: args.paced ?? 2,
  pacedRate: args.rate,
  warmup: args.warmup ?? 1,
  sliceWarmup: args['slice-warmup'] ?? (sideBySide ? 1 : 0),
  connections: args.connections,
  poolSize: args.pool,
};
const partial = args.quick || args.only !== undefined || args.profile || args.runs !== undefined;
const outDir = args.out ?? (partial ? join(here, 'results', 'raw', 'partial') : join(here, 'results'));
const profileDir = join(here, 'results', 'raw', 'profiles');

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

const profileOf = (c) => (args.profile ? join(profileDir, `${c.id.replace('/', '-')}.cpuprofile`) : undefined);

function logRun(round, c, r) {
  log(
    `${round + 1}/${config.runs} ${c.id.padEnd(34)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50} ms  p99 ${r.p99} ms  ${r.cpuUsPerReq.toFixed(1)} µs/req` +
      (r.pacedCpuUsPerReq === undefined
        ? ''
        : `  @${config.pacedRate}/s ${r.pacedCpuUsPerReq.toFixed(1)} µs/req${r.pacedValid ? '' : ' (saturated)'}`) +
      (r.clientRoundTripsPerReq !== undefined ? `  ${r.clientRoundTripsPerReq.toFixed(2)} redis rt/req` : '') +
      (r.redisCommandsPerReq !== undefined
        ? `  redis ran ${r.redisCommandsPerReq.toFixed(2)} cmds, ${r.redisCpuUsPerReq.toFixed(1)} µs/req`
        : '') +
      (r.problems.length ? `  ⚠ ${r.problems.join('; ')}` : ''),
  );
}

/** Every case in its own fresh server for each run, round-robin over all cases. */
async function measureRoundRobin(cases, env) {
  const runs = [];
  for (let round = 0; round < config.runs; round++) {
    for (const c of cases) {
      try {
        const r = { ...(await runOnce(c, env, config, { profile: profileOf(c) })), round };
        runs.push(r);
        logRun(round, c, r);
      } catch (error) {
        log(`${round + 1}/${config.runs} ${c.id}: FAILED ${error.message}`);
        runs.push({ case: c.id, round, failed: String(error.message) });
      }
    }
  }
  return runs;
}

/** A baseline slice comes before every this many other slices of a side-by-side round. */
const BASELINE_EVERY = 3;

/**
 * One round's order. The cases other than the baseline (the bare case, or the first if it was
 * left out) go in units: an idempo case with the peers measured against it, whose slices are
 * taken one after the other (in turn first and last, round by round), so a peer target compares
 * slices seconds apart as a bare target does. The units are rotated by the round, so each takes
 * each place in turn, and the baseline comes before every `BASELINE_EVERY` slices or so, so no
 * slice is more than a few away from one of the baseline's in a group of a dozen cases.
 */
function sliceOrder(opened, round) {
  const baseline = opened.find((o) => o.c.id === o.c.baseline) ?? opened[0];
  const others = opened.filter((o) => o !== baseline);
  const ids = new Set(others.map((o) => o.c.id));
  // The idempo case a peer is measured against, when that case is in the group too.
  const besideOf = (o) => {
    const id = `${o.c.peerOf}/${o.c.workload}`;
    return o.c.kind === 'peer' && ids.has(id) ? id : undefined;
  };
  const units = others
    .filter((o) => besideOf(o) === undefined)
    .map((o) => {
      const unit = [o, ...others.filter((p) => besideOf(p) === o.c.id)];
      return round % 2 === 0 ? unit : unit.reverse();
    });
  const rotated = units.map((_, i) => units[(i + round) % units.length]);
  const order = [baseline];
  let sinceBaseline = 0;
  for (const unit of rotated) {
    if (sinceBaseline >= BASELINE_EVERY) {
      order.push(baseline);
      sinceBaseline = 0;
    }
    order.push(...unit);
    sinceBaseline += unit.length;
  }
  return order;
}

/**
 * `--side-by-side`: the cases of one group and workload (a bare server, idempo's variants, the
 * peers) opened together and measured in alternating slices, as `ab.js` does, so each ratio
 * compares slices taken seconds apart. A round gives every case a slice (the baseline several);
 * `seq` numbers the slices of a group in the order taken, for the report's pairing.
 */
async function measureSideBySide(cases, env) {
  const sets = new Map();
  for (const c of cases) {
    const set = `${c.group}/${c.workload}`;
    sets.set(set, [...(sets.get(set) ?? []), c]);
  }
  const runs = [];
  for (const set of sets.values()) {
    // Every store emptied first: opening a case must not empty what an earlier one primed.
    for (const c of set) await emptyStoresFor(c, env);
    const opened = [];
    try {
      for (const c of set) {
        try {
          opened.push(await openCase(c, env, config, { emptied: true, profile: profileOf(c) }));
        } catch (error) {
          log(`${c.id}: FAILED to open: ${error.message}`);
          runs.push({ case: c.id, failed: String(error.message) });
        }
      }
      let seq = 0;
      for (let round = 0; round < config.runs; round++) {
        for (const o of sliceOrder(opened, round)) {
          try {
            const r = { ...(await measureCase(o, env, config)), round, seq: seq++ };
            runs.push(r);
            logRun(round, o.c, r);
          } catch (error) {
            log(`${round + 1}/${config.runs} ${o.c.id}: FAILED ${error.message}`);
            runs.push({ case: o.c.id, round, failed: String(error.message) });
          }
        }
      }
    } finally {
      await Promise.all(opened.map((o) => closeCase(o)));
    }
  }
  return runs;
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
  const cases = selected.filter((c) => missingNeeds(c, env).length === 0);
  const skipped = selected
    .filter((c) => !cases.includes(c))
    .map((c) => ({ case: c.id, missing: missingNeeds(c, env) }));
  if (args.profile) mkdirSync(profileDir, { recursive: true });

  const quietLoad = await waitQuiet(args['wait-quiet']);
  const startedAt = new Date();
  // Described before the runs, so the commit is the one the measured dist/ was built from.
  const described = machine(root);
  log(
    `${cases.length} cases × ${config.runs} runs, ${config.duration}s each (+${config.warmup}s warm-up, ${config.sliceWarmup > 0 ? `+${config.sliceWarmup}s unmeasured before each, ` : ''}+${config.pacedDuration}s at ${config.pacedRate} req/s), ${config.connections} connections; 1-min load ${quietLoad}`,
  );

  const runs = sideBySide ? await measureSideBySide(cases, env) : await measureRoundRobin(cases, env);
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
    sideBySide,
    ...(sideBySide ? { baselineEvery: BASELINE_EVERY, peersBeside: true } : {}),
  };
  mkdirSync(outDir, { recursive: true });
  const written = writeReport({ outDir, meta, cases, runs });
  log(`wrote ${written.join(', ')}`);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
