// `npm run chaos`: the ledger chaos harness. Runs every scenario (or those named), prints a table
// per scenario and a summary, and exits 1 when any scenario shows an unexplained duplicate, an
// allowed-kind duplicate without the re-drive marker, a wrong or unexecuted success, or a stuck key.
//
//   npm run chaos                                  all scenarios, full size (a few minutes)
//   npm run chaos -- --quick                       all scenarios, small (about a minute)
//   npm run chaos -- --scenario gateway-redis --ops 200 --duration 20s
//   npm run chaos -- --json /tmp/chaos.json        also write every figure and the evidence
//   npm run chaos -- --failover                    only the failover scenarios (Redis Cluster, PostgreSQL)
//   npm run chaos -- --scenario failover-redis-pause,failover-redis-pause-ack
//   npm run chaos -- --scenario failover-postgres-promote,failover-postgres-promote-sync
//
// The failover scenarios (see scenarios.js) run every fault without and with the option that is
// meant to survive it: failover-redis-<fault>[-ack], the Redis store's replicaAck;
// failover-postgres-promote[-sync], a synchronous standby and the PostgreSQL store's
// synchronousCommit 'on'. Those without it are controls: their duplicates are reported, and only
// the runs with it fail on a duplicate. Each also prints the failover window (fault to last
// 503/409) and the option's cost: the latency of the attempts that ran the work and succeeded
// (all of them, and those clear of any fault) and operations completed per second; PostgreSQL
// runs also print the writes each crashed primary had and its promoted standby did not.
//
// Flags: --scenario <name[,name]> (repeatable), --ops <n>, --duration <30s|30000>, --quick,
// --instances <n>, --seed <n>, --lease <5s|5000> (keep it above the store's failover), --json <path>,
// --list. Build first (`npm run build`): it runs dist/.
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ALLOWED_CAUSES } from './analysis.js';
import { runScenario } from './harness.js';
import { cleanupSync, installCleanupHandlers, ROOT } from './procs.js';
import { CONTROLS, FAILOVER_SCENARIOS, resolveScenario, SCENARIOS } from './scenarios.js';

const { values } = parseArgs({
  options: {
    scenario: { type: 'string', multiple: true },
    ops: { type: 'string' },
    duration: { type: 'string' },
    quick: { type: 'boolean', default: false },
    instances: { type: 'string' },
    seed: { type: 'string' },
    lease: { type: 'string' },
    'abandon-rate': { type: 'string' },
    json: { type: 'string' },
    list: { type: 'boolean', default: false },
    failover: { type: 'boolean', default: false },
  },
});

if (values.list) {
  for (const [name, scenario] of Object.entries({ ...SCENARIOS, ...FAILOVER_SCENARIOS, ...CONTROLS }))
    console.log(`${name.padEnd(20)} ${scenario.about}`);
  process.exit(0);
}
if (!existsSync(join(ROOT, 'dist/gateway/cli.js'))) {
  console.error('chaos: dist/ is missing; run `npm run build` first.');
  process.exit(2);
}

function parseDuration(text) {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text);
  if (!match) throw new Error(`--duration: expected e.g. 30s, 2m or 30000, got ${text}`);
  return Number(match[1]) * { ms: 1, s: 1_000, m: 60_000 }[match[2] ?? 'ms'];
}

const defaults = values.failover
  ? Object.keys(FAILOVER_SCENARIOS)
  : [...Object.keys(SCENARIOS), ...Object.keys(FAILOVER_SCENARIOS)];
const names = (values.scenario ?? defaults).flatMap((s) => s.split(',')).filter(Boolean);
const abandonRate = values['abandon-rate'] === undefined ? undefined : Number(values['abandon-rate']);
if (abandonRate !== undefined && !(abandonRate >= 0 && abandonRate <= 1)) {
  console.error(`chaos: --abandon-rate: expected a fraction from 0 to 1, got ${values['abandon-rate']}`);
  process.exit(2);
}
const overrides = {
  ...(values.ops ? { ops: Number(values.ops) } : {}),
  ...(values.duration ? { durationMs: parseDuration(values.duration) } : {}),
  ...(values.instances ? { instances: Number(values.instances) } : {}),
  ...(values.seed ? { seed: Number(values.seed) } : {}),
  ...(values.lease ? { lease: values.lease } : {}),
  ...(abandonRate !== undefined ? { abandonRate } : {}),
};
const scenarios = names.map((name) => resolveScenario(name, { quick: values.quick, overrides }));

installCleanupHandlers();
// Bounded whatever happens: each scenario's load, its wait for open executions (up to 15 s) and
// for one lease before the final retries, those retries, set-up, plus slack.
const leaseMsOf = (lease) => Number.parseFloat(lease) * (String(lease).endsWith('ms') ? 1 : 1_000);
const budgetMs = scenarios.reduce(
  (sum, s) => sum + s.durationMs + s.opBudgetMs + 15_000 + leaseMsOf(s.lease) + s.finalWindowMs + 60_000,
  0,
);
const watchdog = setTimeout(() => {
  console.error(`chaos: still running after ${Math.round(budgetMs / 1_000)} s, giving up`);
  cleanupSync();
  process.exit(2);
}, budgetMs);
watchdog.unref();

const table = (rows) => {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((row) => String(row[c]).length)));
  const line = (row) =>
    `| ${row.map((cell, c) => (c === 0 ? String(cell).padEnd(widths[c]) : String(cell).padStart(widths[c]))).join(' | ')} |`;
  return [
    line(rows[0]),
    `|${widths.map((w, c) => (c === 0 ? '-'.repeat(w + 2) : `${'-'.repeat(w + 1)}:`)).join('|')}|`,
    ...rows.slice(1).map(line),
  ].join('\n');
};

/** Problems that fail the run. Allowed-kind duplicates are marked by definition (see analysis.js). */
function failures(result) {
  const out = [];
  // A control shows what the option prevents: its duplicates are its finding, not a failure.
  if (result.control) return out;
  if (result.unexplainedDuplicates > 0) out.push(`${result.unexplainedDuplicates} unexplained duplicates`);
  if (result.wrongSuccesses > 0) out.push(`${result.wrongSuccesses} wrong successes`);
  if (result.unexecutedSuccesses > 0) out.push(`${result.unexecutedSuccesses} unexecuted successes`);
  if (result.stuckKeys > 0) out.push(`${result.stuckKeys} stuck keys`);
  return out;
}

function printScenario(config, result) {
  const rows = [
    ['figure', 'value'],
    ['operations', result.operations],
    ['executions (ledger)', result.executions],
    ['duplicates', result.duplicates],
    ...ALLOWED_CAUSES.map((cause) => [`  ${cause}`, result.causes[cause] ?? 0]),
    ...Object.entries(result.causes)
      .filter(([cause]) => !ALLOWED_CAUSES.includes(cause))
      .map(([cause, n]) => [`  ${cause}`, n]),
    ['wrong successes', result.wrongSuccesses],
    ['unexecuted successes', result.unexecutedSuccesses],
    ['keys stuck after a final retry', result.stuckKeys],
    ['final retry failed otherwise (5xx/network)', result.finalFailed],
    ['successes not verifiable (no final replay)', result.unverifiedSuccesses],
    ['operations the client gave up on', result.clientGaveUp],
    ['attempts (abandoned)', `${result.attempts} (${result.abandonedAttempts})`],
    ['answers dropped by the balancer', result.chaos.balancer.droppedResponses],
    ['slow upstream executions', result.slowExecutions],
    ['instance kills (restart failures)', `${result.chaos.kills} (${result.chaos.instanceStartFailures})`],
    ['store outages', result.chaos.storeOutages],
  ];
  console.log(
    `\n## ${config.name}: ${config.about}\n   ${config.ops} ops over ${config.durationMs / 1_000} s, seed ${config.seed}, ` +
      `drop ${config.dropRate * 100}%, abandon ${config.abandonRate * 100}%, slow ${config.slowRate * 100}% ` +
      `(${config.slowMs} ms vs --upstream-timeout ${config.upstreamTimeout}), lease ${config.lease}; ${result.seconds} s\n`,
  );
  console.log(table(rows));
  const events = Object.entries(result.instanceEvents)
    .filter(([name]) => !/^(executed|replayed|conflict)$/.test(name))
    .map(([name, n]) => `${name} ${n}`)
    .join(', ');
  if (events) console.log(`   instance events: ${events}`);
  for (const [cause, examples] of Object.entries(result.evidence.duplicates)) {
    if (ALLOWED_CAUSES.includes(cause)) continue;
    console.log(`   e.g. ${cause}: ${JSON.stringify(examples[0])}`);
  }
  if (result.evidence.stuck[0]) console.log(`   e.g. stuck: ${JSON.stringify(result.evidence.stuck[0])}`);
  if (result.evidence.wrong[0]) console.log(`   e.g. wrong success: ${JSON.stringify(result.evidence.wrong[0])}`);
  if (result.failover) {
    const f = result.failover;
    console.log(
      `   failover: ${f.faults} faults (${f.promotions} promotions); clients turned away (503/409) for ` +
        `${f.windowMedianMs} ms median, ${f.windowMaxMs} ms max after a fault (503 only: ${f.window503MedianMs} ms ` +
        `median, ${f.window503MaxMs} ms max); ${f.answers503} × 503, ` +
        `${f.answers409} × 409; successful attempts p50 ${f.latencyP50Ms} ms, p99 ${f.latencyP99Ms} ms ` +
        `(clear of faults p50 ${f.clearLatencyP50Ms} ms, p99 ${f.clearLatencyP99Ms} ms); ` +
        `${f.completedPerSecond} operations completed per second`,
    );
    if (f.lostWrites) {
      const lost = (counts) =>
        Object.entries(counts)
          .map(([what, n]) => `${n} ${what}`)
          .join(', ') || 'none';
      console.log(`   on the crashed primary, not on the promoted standby: ${lost(f.lostWrites)}`);
      console.log(
        `   per fault: ${f.windows
          .map(
            (w) =>
              `promoted ${w.promotedMs} ms, endpoint re-pointed ${w.releasedMs} ms, standby back ${w.wholeAgainMs} ms ` +
              `after the crash; turned away ${w.windowMs} ms (503: ${w.window503Ms} ms); lost ${lost(w.lostWrites)}`,
          )
          .join(' | ')}`,
      );
    }
  }
  if (result.chaos.restartFailures.length > 0)
    console.log(`   instances that never came back: ${result.chaos.restartFailures.join('; ')}`);
}

const started = Date.now();
const results = [];
let failed = false;
for (const config of scenarios) {
  console.log(`\nchaos: ${config.name} …`);
  try {
    const result = await runScenario(config, (line) => console.log(line));
    results.push(result);
    printScenario(config, result);
    if (failures(result).length > 0) failed = true;
  } catch (error) {
    failed = true;
    results.push({ name: config.name, error: String(error?.stack ?? error) });
    console.error(`chaos: ${config.name} could not run: ${error?.stack ?? error}`);
  }
}

console.log('\n## summary\n');
console.log(
  table([
    [
      'scenario',
      'ops',
      'executions',
      'duplicates',
      'allowed or explained',
      'unexplained',
      'wrong',
      'unexecuted',
      'stuck',
    ],
    ...results.map((r) =>
      r.error
        ? [r.name, 'error', '', '', '', '', '', '', '']
        : [
            r.control ? `${r.name} (control)` : r.name,
            r.operations,
            r.executions,
            r.duplicates,
            r.duplicates - r.unexplainedDuplicates,
            r.unexplainedDuplicates,
            r.wrongSuccesses,
            r.unexecutedSuccesses,
            r.stuckKeys,
          ],
    ),
  ]),
);
console.log(`\nDone in ${Math.round((Date.now() - started) / 1_000)} s.${failed ? ' Never twice: NOT kept.' : ''}`);
if (values.json) writeFileSync(values.json, `${JSON.stringify({ scenarios: results }, null, 2)}\n`);
process.exitCode = failed ? 1 : 0;
