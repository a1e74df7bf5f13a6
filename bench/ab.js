/**
 * Side by side: the cases named are started once and all at the same time, then measured in
 * short slices taken in turn (A B, B A, A B, …), so a slow second of this shared machine falls on
 * each case alike instead of on whichever ran in that minute of a full run. Reports, for every
 * case after the first, the median of its per-slice ratios to the first case (req/s) and of its
 * per-slice differences in server CPU per request; with a target of issue 20 for the pair, how
 * many slices met it.
 *
 *   node bench/ab.js [--slices N] [--slice S] [--warmup S] [--slice-warmup S] [--connections N]
 *                    [--paced S] [--rate N] [--json FILE] CASE CASE…
 *
 *   node bench/ab.js proxy/fresh gateway-sqlite/fresh
 *   node bench/ab.js --paced 2 fastify/fresh fastify-idempo-memory/fresh
 *
 * The first CASE is the reference. `CASE@DIR` runs the case's server from another checkout,
 * built, with its own bench servers and idempo: two builds of one case side by side, e.g.
 *
 *   git worktree add /tmp/before HEAD~1 && ln -s "$PWD/node_modules" /tmp/before/node_modules
 *   (cd /tmp/before && npm run build)
 *   node bench/ab.js gateway-memory/fresh@/tmp/before gateway-memory/fresh
 *
 * Run `npm run build` first. Not for CI: it measures.
 */
import { writeFileSync } from 'node:fs';
import { TARGETS } from './cases.js';
import { parseToolArgs, refuse } from './lib/cli.js';
import {
  checkEnvironment,
  closeCase,
  emptyStoresFor,
  loadavg,
  log,
  measureCase,
  openCase,
  requireNeeds,
} from './lib/harness.js';
import { namedCases } from './lib/named-cases.js';
import { median } from './lib/report.js';

const { values: args, positionals } = parseToolArgs(import.meta.url, {
  allowPositionals: true,
  options: {
    slices: { type: 'string', default: '12', number: 'count' },
    slice: { type: 'string', default: '2', number: 'positive' },
    warmup: { type: 'string', default: '1', number: 'seconds' },
    'slice-warmup': { type: 'string', default: '1', number: 'seconds' },
    connections: { type: 'string', default: '20', number: 'count' },
    paced: { type: 'string', default: '0', number: 'seconds' },
    rate: { type: 'string', default: '2000', number: 'count' },
    pool: { type: 'string', default: '1000', number: 'count' },
    json: { type: 'string' },
  },
});

const config = {
  duration: args.slice,
  warmup: args.warmup,
  sliceWarmup: args['slice-warmup'],
  pacedDuration: args.paced,
  pacedRate: args.rate,
  connections: args.connections,
  poolSize: args.pool,
};
const slices = args.slices;
if (positionals.length < 2)
  refuse(import.meta.url, 'name at least two cases, the reference first (e.g. proxy/fresh gateway-sqlite/fresh)');
const cases = namedCases(positionals);

/** Issue 20's target for `c` measured against `reference`, if it has one (both of one build). */
function targetFor(c, reference) {
  if (c.root !== reference.root) return undefined;
  for (const t of TARGETS) {
    if (t.variant !== c.variantId || t.workload !== c.workload) continue;
    if (t.ratio !== undefined && reference.id === c.baseline) return { kind: 'ratio', value: t.ratio };
    if (t.peer !== undefined && reference.id === `${t.peer}/${c.workload}`)
      return { kind: 'ratio', value: t.peerRatio };
    if (t.cpu !== undefined && reference.id === c.baseline) return { kind: 'cpu', value: t.cpu };
  }
  return undefined;
}

const env = await checkEnvironment();
requireNeeds(cases, env);
log(
  `${cases.length} cases side by side, ${slices} slices of ${config.duration}s each${config.sliceWarmup > 0 ? ` after ${config.sliceWarmup}s unmeasured` : ''}${config.pacedDuration > 0 ? ` (+${config.pacedDuration}s at ${config.pacedRate} req/s)` : ''}, ${config.connections} connections; 1-min load ${loadavg()}`,
);

// Every store emptied first: opening a case must not empty what an earlier one primed.
for (const c of cases) await emptyStoresFor(c, env);
const opened = [];
const slicesOf = new Map(cases.map((c) => [c.label, []]));
try {
  for (const c of cases) opened.push(await openCase(c, env, config, { emptied: true, root: c.root }));
  for (let s = 0; s < slices; s++) {
    // Each case takes each place in the order in turn.
    const order = opened.map((_, i) => opened[(i + s) % opened.length]);
    for (const o of order) {
      const r = await measureCase(o, env, config);
      slicesOf.get(o.c.label).push(r);
      if (r.problems.length > 0) log(`${s + 1}/${slices} ${o.c.label}: ⚠ ${r.problems.join('; ')}`);
    }
  }
} finally {
  await Promise.all(opened.map((o) => closeCase(o)));
  env.redis?.disconnect();
}

const reference = cases[0];
const summary = cases.map((c) => {
  const runs = slicesOf.get(c.label);
  const refRuns = slicesOf.get(reference.label);
  const row = {
    case: c.label,
    rps: median(runs.map((r) => r.rps)),
    cpuUsPerReq: median(runs.map((r) => r.cpuUsPerReq)),
    ...(config.pacedDuration > 0 ? { pacedCpuUsPerReq: median(runs.map((r) => r.pacedCpuUsPerReq)) } : {}),
  };
  if (c === reference) return row;
  const ratios = runs.map((r, i) => r.rps / refRuns[i].rps);
  // CPU targets are judged at the fixed rate when there is one, as in the full run.
  const cpuKey = config.pacedDuration > 0 ? 'pacedCpuUsPerReq' : 'cpuUsPerReq';
  const added = runs.map((r, i) => r[cpuKey] - refRuns[i][cpuKey]);
  Object.assign(row, { ratio: median(ratios), ratios, cpuAdded: median(added), cpuAddedBy: cpuKey });
  const target = targetFor(c, reference);
  if (target !== undefined) {
    const met =
      target.kind === 'ratio' ? ratios.filter((x) => x >= target.value) : added.filter((x) => x <= target.value);
    row.target = { ...target, slicesMet: met.length, slices: runs.length };
  }
  return row;
});

for (const row of summary) {
  const parts = [
    `${row.case.padEnd(36)} ${row.rps.toFixed(0).padStart(6)} req/s  ${row.cpuUsPerReq.toFixed(1)} µs/req`,
  ];
  if (row.pacedCpuUsPerReq !== undefined)
    parts.push(`@${config.pacedRate}/s ${row.pacedCpuUsPerReq.toFixed(1)} µs/req`);
  if (row.ratio !== undefined) {
    parts.push(
      `× ${reference.label}: ${row.ratio.toFixed(2)} (slices ${row.ratios.map((x) => x.toFixed(2)).join(' ')})`,
    );
    parts.push(`CPU ${row.cpuAdded >= 0 ? '+' : ''}${row.cpuAdded.toFixed(1)} µs/req`);
  }
  if (row.target) {
    const { kind, value, slicesMet, slices: n } = row.target;
    parts.push(`target ${kind === 'ratio' ? `≥ ${value}×` : `≤ +${value} µs`}: met in ${slicesMet}/${n} slices`);
  }
  console.log(parts.join('  '));
}
if (args.json)
  writeFileSync(
    args.json,
    `${JSON.stringify({ config, slices, summary, runs: Object.fromEntries(slicesOf) }, null, 2)}\n`,
  );
