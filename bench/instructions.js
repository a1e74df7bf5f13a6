/**
 * Instructions per request: each case's server runs under valgrind's callgrind, which counts the
 * user-space instructions the process executes (JavaScript, V8, Node's C++, libc; not the
 * kernel's side of its system calls). Unlike req/s and CPU µs, which this shared machine moves by
 * up to 2× from one minute to the next, the count says how much work a request is, whatever the
 * machine's speed: what idempo adds to the bare framework, and what a change did.
 *
 *   node bench/instructions.js [--windows N] [--discard N] [--window S] [--warmup S]
 *                              [--connections N] [--node-args ARGS] [--functions N]
 *                              [--json FILE] CASE CASE…
 *
 *   node bench/instructions.js fastify/fresh fastify-idempo-memory/fresh
 *   node bench/instructions.js fastify-idempo-memory/fresh@/tmp/before fastify-idempo-memory/fresh
 *
 * Cases and `CASE@DIR` as in `bench/ab.js`; the first is the reference. Each case in turn: its
 * server started under callgrind with counting off, the store emptied and primed, `--warmup`
 * seconds of load, then `--windows` windows of `--window` seconds, counting only while the load
 * runs. The first `--discard` windows are dropped: V8's optimising compiler is still at work in
 * them, whatever the warm-up (under valgrind it falls behind the requests).
 *
 * Node runs with `--single-threaded` unless `--node-args` says otherwise: V8 then compiles and
 * collects garbage on the main thread, the same work as on its helper threads (callgrind counts
 * every thread), but no longer dependent on how valgrind schedules threads, which otherwise moved
 * a count by 2× when two such servers ran at once.
 *
 * Three figures per case, per response over the windows kept: the median window; the lowest
 * window, the work of a request between major garbage collections (with idempo's memory store
 * holding 100,000 records, a window with a mark-compact counts about twice as much); and the
 * mean, all the work, which depends on how many major collections fell in the windows. A bare
 * case's windows agree to about 1%; idempo's lowest windows to about 1–2% from one run to the
 * next. What it does not see: time lost to cache misses and the kernel's side of system calls
 * (strace counts one `read` and one `writev` per request with idempo as without).
 *
 * The callgrind files of each case's last count are kept in bench/results/raw/instructions/ for
 * `callgrind_annotate`, which names V8's builtins and Node's C++ (JavaScript shows as
 * addresses). `--functions N` names the JavaScript too (Node runs with `--perf-basic-prof`, and
 * its map of compiled code is kept beside the counts) and prints, from each case's lowest
 * window, the reference's N costliest functions and, for every other case, the N functions it
 * adds most instructions to per request (and those where it saves). Needs valgrind
 * (`apt-get install valgrind`) and `npm run build`. Not for CI: it measures.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { costDifferences, functionCosts, perfMapPath } from './lib/callgrind.js';
import { parseToolArgs, refuse } from './lib/cli.js';
import {
  checkEnvironment,
  closeCase,
  emptyStoresFor,
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
    windows: { type: 'string', default: '10', number: 'count' },
    discard: { type: 'string', default: '3', number: 'whole' },
    window: { type: 'string', default: '4', number: 'positive' },
    warmup: { type: 'string', default: '20', number: 'seconds' },
    connections: { type: 'string', default: '20', number: 'count' },
    pool: { type: 'string', default: '1000', number: 'count' },
    json: { type: 'string' },
    'node-args': { type: 'string', default: '--single-threaded' },
    functions: { type: 'string', number: 'whole' },
  },
});

const windows = args.windows;
const functionRows = args.functions ?? 0;
const discard = args.discard;
if (windows <= discard) refuse(import.meta.url, `--windows (${windows}) must be above --discard (${discard})`);
const config = {
  duration: args.window,
  warmup: args.warmup,
  pacedDuration: 0,
  pacedRate: 0,
  connections: args.connections,
  poolSize: args.pool,
};
if (positionals.length < 1)
  refuse(import.meta.url, 'name the cases to count, the reference first (e.g. fastify/fresh)');
const cases = namedCases(positionals);

for (const tool of ['valgrind', 'callgrind_control']) {
  try {
    execFileSync(tool, ['--version'], { stdio: 'ignore' });
  } catch {
    throw new Error(`${tool} is not installed (Debian: apt-get install valgrind)`);
  }
}

const here = dirname(fileURLToPath(import.meta.url));
const outDir = join(here, 'results', 'raw', 'instructions');
mkdirSync(outDir, { recursive: true });

/** Sends one command to the callgrind of process `pid` and waits until it has been carried out. */
function callgrind(pid, ...command) {
  execFileSync('callgrind_control', [...command, String(pid)], { stdio: 'ignore' });
}

/** The instruction count of one callgrind dump (its `totals:` line). */
function totalOf(file) {
  const line = readFileSync(file, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('totals:'));
  if (line === undefined) throw new Error(`${file}: no totals line`);
  return Number(line.split(/\s+/)[1]);
}

async function countCase(c, env) {
  const stem = join(outDir, c.label.replace(/[^\w.-]+/g, '_'));
  // Only the last count of each case is kept: a count's files take about 15 MB.
  for (const file of readdirSync(outDir)) if (file.startsWith(`${basename(stem)}.`)) rmSync(join(outDir, file));
  const wrap = {
    command: [
      'valgrind',
      '--tool=callgrind',
      '--instr-atstart=no',
      `--callgrind-out-file=${stem}.%p`,
      // V8 writes and rewrites machine code; valgrind must notice code changed outside mapped files.
      '--smc-check=all-non-file',
    ],
    nodeArgs: [
      ...args['node-args'].split(' ').filter(Boolean),
      // The flag also starts V8's log, which would land in the working directory as isolate-*.log.
      ...(functionRows > 0 ? ['--perf-basic-prof', '--no-logfile-per-isolate', `--logfile=${stem}.v8.log`] : []),
    ],
  };
  await emptyStoresFor(c, env);
  const opened = await openCase(c, env, config, { emptied: true, root: c.root, wrapServer: wrap });
  const { pid } = opened.server.child;
  const counted = [];
  try {
    for (let w = 1; w <= windows; w++) {
      const r = await measureCase(opened, env, config, {
        open: async () => {
          callgrind(pid, '--zero');
          callgrind(pid, '--instr=on');
        },
        close: async () => {
          callgrind(pid, '--instr=off');
          callgrind(pid, '--dump');
        },
      });
      const instructions = totalOf(`${stem}.${pid}.${w}`);
      const perRequest = instructions / r.responses;
      counted.push({ window: w, responses: r.responses, instructions, perRequest, problems: r.problems });
      const note = r.problems.length > 0 ? `  ⚠ ${r.problems.join('; ')}` : '';
      log(
        `${c.label} window ${w}/${windows}${w <= discard ? ' (discarded)' : ''}: ${r.responses} responses, ${Math.round(perRequest)} instructions each${note}`,
      );
    }
  } finally {
    await closeCase(opened);
  }
  const kept = counted.slice(discard);
  const perWindow = kept.map((x) => x.perRequest);
  const lowest = kept.reduce((a, b) => (b.perRequest < a.perRequest ? b : a));
  let perfMap;
  if (functionRows > 0 && existsSync(perfMapPath(pid))) {
    // Kept beside the counts it names, for callgrind_annotate later.
    perfMap = `${stem}.${pid}.map`;
    copyFileSync(perfMapPath(pid), perfMap);
    rmSync(perfMapPath(pid));
  }
  rmSync(`${stem}.v8.log`, { force: true });
  return {
    case: c.label,
    perRequest: median(perWindow),
    floor: Math.min(...perWindow),
    mean: kept.reduce((sum, x) => sum + x.instructions, 0) / kept.reduce((sum, x) => sum + x.responses, 0),
    windows: counted,
    files: `${stem}.${pid}.*`,
    // The checkout the server ran from: its paths are cut from the functions' names.
    lowest: {
      file: `${stem}.${pid}.${lowest.window}`,
      responses: lowest.responses,
      perfMap,
      root: c.root ?? dirname(here),
    },
  };
}

const env = await checkEnvironment();
requireNeeds(cases, env);
log(
  `${cases.length} cases under callgrind, one at a time: ${args.warmup}s warm-up, ${windows} windows of ${args.window}s (first ${discard} discarded), ${config.connections} connections`,
);
const results = [];
try {
  for (const c of cases) results.push(await countCase(c, env));
} finally {
  env.redis?.disconnect();
}

const reference = results[0];
const k = (n) => `${(n / 1000).toFixed(1)}k`;
console.log(
  `${'case'.padEnd(44)} ${'median'.padStart(8)} ${'lowest'.padStart(8)} ${'mean'.padStart(8)}  instructions per request`,
);
for (const r of results) {
  const parts = [
    `${r.case.padEnd(44)} ${k(r.perRequest).padStart(8)} ${k(r.floor).padStart(8)} ${k(r.mean).padStart(8)}`,
  ];
  if (r !== reference) {
    const added = r.perRequest - reference.perRequest;
    parts.push(`median ${added >= 0 ? '+' : ''}${k(added)} (${(r.perRequest / reference.perRequest).toFixed(3)}×)`);
  }
  console.log(parts.join('  '));
}
console.log(`callgrind files: ${outDir}`);
if (functionRows > 0) printFunctions(results, functionRows);
if (args.json) writeFileSync(args.json, `${JSON.stringify({ config, windows, discard, results }, null, 2)}\n`);

/**
 * Each case's lowest kept window, function by function: the reference's costliest functions, and
 * for every other case the functions whose instructions per request differ most from the
 * reference's.
 */
function printFunctions(counts, rows) {
  const costsOf = ({ lowest }) => ({
    responses: lowest.responses,
    costs: functionCosts(lowest.file, { perfMap: lowest.perfMap, roots: [...new Set([lowest.root, dirname(here)])] }),
  });
  const row = (n) => `${Math.round(n)}`.padStart(8);
  const base = costsOf(counts[0]);
  console.log(`\n${counts[0].case}, lowest window: instructions per request, own (not callees')`);
  const top = [...base.costs].sort((a, b) => b[1] - a[1]).slice(0, rows);
  for (const [name, n] of top) console.log(`${row(n / base.responses)}  ${name}`);
  for (const r of counts.slice(1)) {
    const { added, saved } = costDifferences(base, costsOf(r), rows);
    console.log(
      `\n${r.case} against ${counts[0].case}, lowest windows: ${'added'.padStart(8)} ${'ref'.padStart(8)} ${'case'.padStart(8)}`,
    );
    for (const d of [...added, ...saved]) console.log(`${row(d.added)} ${row(d.before)} ${row(d.after)}  ${d.name}`);
  }
}
