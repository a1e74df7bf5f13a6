/**
 * Turns the runs into medians, ratios and verdicts, and writes RESULTS.md, results.json and the
 * chart (SVG, plus a PNG when an SVG renderer is installed).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { GROUPS, TARGETS } from '../cases.js';
import { REQUEST_BODY } from './app.js';
import { chartSvg } from './chart.js';

const NOTES = join(dirname(fileURLToPath(import.meta.url)), '..', 'notes');

export function median(values) {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  if (sorted.length === 0) return undefined;
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const FIELDS = [
  'rps',
  'p50',
  'p99',
  'cpuUsPerReq',
  'mainUsPerReq',
  'pacedRps',
  'cpuUserUsPerReq',
  'cpuSystemUsPerReq',
  'serverCores',
  'handlerRunsPerReq',
  'redisCommandsPerReq',
  'clientRoundTripsPerReq',
  'redisScriptsPerReq',
  'redisCpuUsPerReq',
  'machineBusyCores',
  'loadgenCores',
  'otherCores',
];

export function summarize(cases, runs) {
  const byCase = new Map();
  for (const c of cases) {
    const ok = runs.filter((r) => r.case === c.id && !r.failed);
    const failed = runs.filter((r) => r.case === c.id && r.failed).map((r) => r.failed);
    const m = { case: c.id, variant: c.variantId, label: c.label, group: c.group, kind: c.kind, workload: c.workload };
    m.runs = ok.length;
    m.failed = failed;
    for (const field of FIELDS) m[field] = median(ok.map((r) => r[field]));
    m.rpsAll = ok.map((r) => Math.round(r.rps));
    // Not enumerable: for pairing only, left out of results.json. Older results carry no round.
    Object.defineProperty(m, 'slices', { value: ok.map((r, i) => ({ ...r, round: r.round ?? i })) });
    m.problems = [...new Set(ok.flatMap((r) => r.problems))];
    // Paced figures only from runs that kept up with the asked rate.
    const paced = ok.filter((r) => r.pacedValid);
    m.pacedRuns = paced.length;
    m.pacedCpuUsPerReq = median(paced.map((r) => r.pacedCpuUsPerReq));
    m.pacedMainUsPerReq = median(paced.map((r) => r.pacedMainUsPerReq));
    if (ok.some((r) => r.redisPerCommand)) {
      const names = new Set(ok.flatMap((r) => Object.keys(r.redisPerCommand ?? {})));
      m.redisPerCommand = Object.fromEntries(
        [...names].map((n) => [n, median(ok.map((r) => r.redisPerCommand?.[n] ?? 0))]),
      );
    }
    byCase.set(c.id, m);
  }
  for (const c of cases) {
    const m = byCase.get(c.id);
    const base = byCase.get(c.baseline);
    if (!base || base.rps === undefined || m.rps === undefined) continue;
    m.ratio = m.rps / base.rps;
    m.cpuDelta = m.cpuUsPerReq - base.cpuUsPerReq;
    m.pacedCpuDelta = m.pacedCpuUsPerReq - base.pacedCpuUsPerReq;
    m.pacedMainDelta = m.pacedMainUsPerReq - base.pacedMainUsPerReq;
    m.pairedRatios = pairs(m, base, rpsRatio);
    m.pairedRatio = median(m.pairedRatios);
    m.pairedCpuDelta = paired(m, base, (mine, theirs) => mine.cpuUsPerReq - theirs.cpuUsPerReq);
    m.pairedPacedCpuDeltas = pairs(m, base, (mine, theirs) =>
      mine.pacedValid && theirs.pacedValid ? mine.pacedCpuUsPerReq - theirs.pacedCpuUsPerReq : Number.NaN,
    );
    m.pairedPacedCpuDelta = median(m.pairedPacedCpuDeltas);
  }
  return byCase;
}

/**
 * `compare(run, other's run beside it)` for each of `m`'s runs. Side by side (runs numbered by
 * `seq`), beside it is `other`'s slice nearest in the order taken, seconds away; in a round-robin
 * run, `other`'s run of the same round, within a minute.
 */
function pairs(m, other, compare) {
  const values = [];
  for (const run of m.slices) {
    const theirs =
      run.seq === undefined ? other.slices.find((o) => o.round === run.round) : nearest(other.slices, run.seq);
    if (theirs !== undefined) values.push(compare(run, theirs));
  }
  return values;
}

/** The median of {@link pairs}. */
function paired(m, other, compare) {
  return median(pairs(m, other, compare));
}

/** Side by side, how many of a target's slice pairs met it: `, k of n slices met`. */
function slicesMet(meta, values, ok) {
  if (!meta.sideBySide) return '';
  const judged = values.filter(Number.isFinite);
  return `, ${judged.filter(ok).length} of ${judged.length} slices met`;
}

function nearest(slices, seq) {
  let best;
  for (const slice of slices) {
    if (slice.seq !== undefined && (best === undefined || Math.abs(slice.seq - seq) < Math.abs(best.seq - seq)))
      best = slice;
  }
  return best;
}

/** The comparison of throughput a ratio target is judged on, one run against the one beside it. */
const rpsRatio = (mine, theirs) => mine.rps / theirs.rps;

function evaluateTargets(byCase, meta) {
  return TARGETS.map((t) => {
    const m = byCase.get(`${t.variant}/${t.workload}`);
    if (!m || m.rps === undefined) return { ...t, measured: undefined, holds: undefined, label: labelOf(t) };
    const checks = [];
    if (t.ratio !== undefined) {
      const ratio = meta.sideBySide ? m.pairedRatio : m.ratio;
      const met = slicesMet(meta, m.pairedRatios ?? [], (r) => r >= t.ratio);
      checks.push({ what: `≥ ${t.ratio.toFixed(2)}× bare`, value: `${fmt(ratio, 2)}×${met}`, ok: ratio >= t.ratio });
    }
    if (t.cpu !== undefined) {
      // Judged at the fixed rate, where both servers answer the same number of requests per
      // second; the saturated figure is shown beside it.
      // Side by side, each slice against the bare slice beside it.
      const [pacedDelta, saturatedDelta] = meta.sideBySide
        ? [m.pairedPacedCpuDelta, m.pairedCpuDelta]
        : [m.pacedCpuDelta, m.cpuDelta];
      const delta = Number.isFinite(pacedDelta) ? pacedDelta : saturatedDelta;
      checks.push({
        what: `≤ +${t.cpu} µs CPU/req`,
        value: `${sign(pacedDelta)} µs at ${meta.config.pacedRate} req/s${slicesMet(meta, m.pairedPacedCpuDeltas ?? [], (d) => d <= t.cpu)} (saturated: ${sign(saturatedDelta)} µs)`,
        ok: delta <= t.cpu,
      });
    }
    if (t.peerRatio !== undefined) {
      const peer = byCase.get(`${t.peer}/${t.workload}`);
      // Side by side, paired slice by slice as a bare target is; otherwise the medians' ratio.
      const ratios = peer?.rps ? pairs(m, peer, rpsRatio) : [];
      const ratio = !peer?.rps ? undefined : meta.sideBySide ? median(ratios) : m.rps / peer.rps;
      const met = slicesMet(meta, ratios, (r) => r >= t.peerRatio);
      checks.push({
        what: `≥ ${t.peerRatio.toFixed(2)}× ${t.peer}`,
        value:
          ratio === undefined
            ? 'peer not measured'
            : `${fmt(ratio, 2)}×${met} (${fmt(m.rps, 0)} vs ${fmt(peer.rps, 0)} req/s)`,
        ok: ratio !== undefined && ratio >= t.peerRatio,
      });
    }
    if (t.rt !== undefined) {
      const rt = m.clientRoundTripsPerReq ?? m.redisCommandsPerReq;
      checks.push({
        what: `${t.rt} round trip${t.rt > 1 ? 's' : ''}/req`,
        value: `${fmt(rt, 2)} (Redis ran ${fmt(m.redisCommandsPerReq, 2)} commands)`,
        ok: rt !== undefined && Math.abs(rt - t.rt) < 0.05,
      });
    }
    return { ...t, label: labelOf(t), checks, holds: checks.every((check) => check.ok) };
  });
}

function labelOf(t) {
  return `${t.variant} · ${t.workload}`;
}

function evaluatePeers(cases, byCase) {
  const rows = [];
  for (const c of cases) {
    if (c.kind !== 'peer') continue;
    const peer = byCase.get(c.id);
    const ours = byCase.get(`${c.peerOf}/${c.workload}`);
    if (!peer?.rps || !ours?.rps) continue;
    rows.push({
      workload: c.workload,
      peer: c.label,
      ours: ours.label,
      group: c.group,
      peerRps: peer.rps,
      oursRps: ours.rps,
      factor: ours.rps / peer.rps,
      peerCpu: peer.cpuUsPerReq,
      oursCpu: ours.cpuUsPerReq,
      ahead: ours.rps > peer.rps,
    });
  }
  return rows;
}

function redisCell(m) {
  if (m.redisCommandsPerReq === undefined) return '';
  return m.clientRoundTripsPerReq === undefined
    ? fmt(m.redisCommandsPerReq, 2)
    : `${fmt(m.clientRoundTripsPerReq, 2)} (${fmt(m.redisCommandsPerReq, 2)})`;
}

function fmt(value, digits = 0) {
  return value === undefined || Number.isNaN(value) ? '–' : value.toFixed(digits);
}

function sign(value, digits = 1) {
  if (value === undefined || Number.isNaN(value)) return '–';
  return `${value >= 0 ? '+' : '−'}${Math.abs(value).toFixed(digits)}`;
}

function thousands(value) {
  return value === undefined ? '–' : Math.round(value).toLocaleString('en-US');
}

function markdown({ meta, cases, byCase, targets, peers, pngWritten, analysis }) {
  const lines = [];
  const push = (...more) => lines.push(...more);
  push('# idempo benchmark results', '');
  push(
    `Generated by \`npm run bench\`${meta.partial ? ' (a partial run: see the configuration below)' : ''} on ${meta.startedAt.slice(0, 10)}, ` +
      `${meta.startedAt.slice(11, 16)}–${meta.finishedAt.slice(11, 16)} UTC, at commit \`${meta.commit}\`${meta.dirty ? ' with uncommitted changes under src/' : ''}.`,
    '',
  );
  push('## Machine', '');
  push('| | |', '|---|---|');
  push(`| CPU | ${meta.cpuModel} |`, `| \`nproc\` | ${meta.nproc} |`, `| memory | ${meta.memoryGiB} GiB |`);
  push(
    `| Node.js | ${meta.node} |`,
    `| kernel | ${meta.kernel} |`,
    `| Redis | ${meta.redis} |`,
    `| PostgreSQL | ${meta.postgres} |`,
    '',
  );
  push('```', '$ lscpu | head', meta.lscpu, '```', '');

  const quiet = quietness(cases, byCase);
  push('## How quiet the machine was', '');
  push(
    `1-minute load average ${fmt(meta.loadavgBefore, 2)} when the runs started and ${fmt(meta.loadavgAfter, 2)} when they ended ` +
      '(the benchmark itself keeps both cores busy, so the load average during the run says little). ' +
      `During the measured windows the whole machine was busy ${fmt(quiet.busy, 2)} cores (median); ` +
      `the server took ${fmt(quiet.server, 2)}, autocannon ${fmt(quiet.loadgen, 2)}, and everything else ` +
      `(other users' processes; for Redis, PostgreSQL and gateway cases also the store or upstream) ${fmt(quiet.other, 2)} ` +
      `in cases with no store or upstream process (range ${fmt(quiet.otherMin, 2)}–${fmt(quiet.otherMax, 2)}).`,
    '',
  );

  push('## Method', '');
  push(
    `- One route, \`POST /payments\` with a ${Buffer.byteLength(REQUEST_BODY)}-byte JSON body, answering \`201\` with a small JSON payment. Every variant runs the same business logic and reads the body as JSON.`,
    meta.sideBySide
      ? `- Each case: a fresh server process (and a fresh upstream for the proxies), an emptied store, autocannon in its own process with ${meta.config.connections} connections, no pipelining, ${meta.config.warmup} s warm-up; then each slice measures ${meta.config.duration} s${meta.config.sliceWarmup > 0 ? `, after ${meta.config.sliceWarmup} s of the same load unmeasured (a case waits most of a minute between its slices, the baseline a few seconds)` : ''}.`
      : `- Each run: a fresh server process (and a fresh upstream for the proxies), an emptied store, autocannon in its own process with ${meta.config.connections} connections, no pipelining, ${meta.config.warmup} s warm-up, then ${meta.config.duration} s measured.`,
    `- **fresh**: every request carries a new \`Idempotency-Key\` (the execute path). **replay**: a pool of ${meta.config.poolSize} keys is completed first, then requests cycle through it (the replay path). Bare servers get the same requests and ignore the header.`,
    meta.sideBySide
      ? `- Side by side (\`--side-by-side\`): the cases of one framework and workload (the bare one, idempo's and the peers') are opened together and measured in ${meta.config.runs} rounds of alternating slices, each case taking each place in the order in turn${meta.baselineEvery ? ` and the bare case again before every ${meta.baselineEvery} others` : ''}${meta.peersBeside ? ", each peer's slice next to that of the idempo case it is measured against" : ''}; the tables show medians. *ratio* is median req/s over the bare framework's median on the same workload; *paired*, the median of each slice's ratio to the bare slice nearest it, is what the targets are judged on (and a peer target, on the same pairing with the peer).`
      : `- ${meta.config.runs} run${meta.config.runs > 1 ? 's' : ''} per case, round-robin over all cases; the tables show medians. *ratio* is median req/s over the bare framework's median on the same workload (*paired*: the median over runs of each run's ratio to the bare run of the same round).`,
    "- *CPU µs/req*: the server process's `process.cpuUsage()` (user + system) over the measured window divided by the responses in it; *Δ*: minus the bare framework's. At saturation this figure grows as throughput falls (fewer requests share each wake-up of the event loop and each write wakes an idle client: bare node:http costs 44 µs/req at 20 connections and 124 µs/req at one), so the same is also measured with autocannon held to a fixed rate (*@N/s*: the same request rate for every variant, after the saturated window, in the same server; left out when a variant could not keep up), and for the main JavaScript thread alone (from `/proc/self/task`, without V8's GC helper threads). The CPU targets are judged on the fixed-rate figure.",
    "- *Redis round trips/req*: for idempo, counted in the server process (every ioredis command it sent), which other clients of the shared Redis cannot inflate; in parentheses, the commands Redis ran per response by `INFO commandstats` deltas over the window, which include the commands inside idempo's Lua scripts. The peers send no scripts, so for them that count is their round trips. *Redis CPU µs/req*: Redis's own CPU time (`INFO cpu`, user + system) over the window per response.",
    '- Every run checks the workload did what it says: the handler ran once per fresh request and never on a replay, and no request failed. Runs that did not are listed under Problems.',
    '',
  );

  push('## Results', '');
  for (const [group, info] of Object.entries(GROUPS)) {
    const rows = cases.filter((c) => c.group === group);
    if (rows.length === 0) continue;
    push(`### ${info.title}`, '');
    push(
      `| variant | workload | req/s | ratio | paired | p50 ms | p99 ms | CPU µs/req | Δ | CPU µs/req @${meta.config.pacedRate}/s | Δ | main thread @${meta.config.pacedRate}/s | Δ | Redis round trips/req | Redis CPU µs/req | runs |`,
      '|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|',
    );
    for (const workload of ['fresh', 'replay']) {
      for (const c of rows.filter((row) => row.workload === workload)) {
        const m = byCase.get(c.id);
        // The group's reference has no Δ; every other case, a bare diagnostic too, is measured against it.
        const baseline = c.variantId === info.baseline;
        push(
          `| ${baseline ? `**${c.label}**` : c.label} | ${workload} | ${thousands(m.rps)} | ${fmt(m.ratio, 2)} | ${fmt(m.pairedRatio, 2)} | ` +
            `${fmt(m.p50, 0)} | ${fmt(m.p99, 0)} | ${fmt(m.cpuUsPerReq, 1)} | ${baseline ? '' : sign(m.cpuDelta)} | ` +
            `${fmt(m.pacedCpuUsPerReq, 1)} | ${baseline ? '' : sign(m.pacedCpuDelta)} | ` +
            `${fmt(m.pacedMainUsPerReq, 1)} | ${baseline ? '' : sign(m.pacedMainDelta)} | ` +
            `${redisCell(m)} | ${fmt(m.redisCpuUsPerReq, 1)} | ${m.runs}${m.failed.length ? ` (+${m.failed.length} failed)` : ''}${m.problems.length ? ' ⚠' : ''} |`,
        );
      }
    }
    push('');
  }

  push('## Targets (issue 20)', '');
  push('| case | target | measured | holds |', '|---|---|---|---|');
  for (const t of targets) {
    if (!t.checks) {
      push(`| ${t.label} | | not measured | – |`);
      continue;
    }
    for (const check of t.checks)
      push(`| ${t.label} | ${check.what} | ${check.value} | ${check.ok ? 'yes' : '**no**'} |`);
  }
  push('');

  if (analysis)
    push(`What bounds the figures that miss, with CPU profiles: the dated notes in [bench/notes](${analysis}).`, '');

  push('## idempo vs. the peers (same framework, store and workload)', '');
  push(
    '| workload | peer | req/s | CPU µs/req | idempo | req/s | CPU µs/req | idempo ÷ peer |',
    '|---|---|--:|--:|---|--:|--:|--:|',
  );
  for (const p of peers) {
    push(
      `| ${p.workload} | ${p.peer} (${GROUPS[p.group].title}) | ${thousands(p.peerRps)} | ${fmt(p.peerCpu, 1)} | ${p.ours} | ${thousands(p.oursRps)} | ${fmt(p.oursCpu, 1)} | ${fmt(p.factor, 2)}×${p.ahead ? '' : ' **behind**'} |`,
    );
  }
  push('');

  const redisRows = cases.filter((c) => byCase.get(c.id).redisPerCommand);
  if (redisRows.length) {
    push('## Redis commands per request, by command', '');
    push('| case | commands |', '|---|---|');
    for (const c of redisRows) {
      const per = byCase.get(c.id).redisPerCommand;
      const text = Object.entries(per)
        .filter(([, v]) => v >= 0.005)
        .sort((a, b) => b[1] - a[1])
        .map(([name, v]) => `${name} ${v.toFixed(2)}`)
        .join(', ');
      push(`| ${GROUPS[c.group].title}: ${c.label} · ${c.workload} | ${text} |`);
    }
    push(
      '',
      '`INFO commandstats` counts the whole server, so another client busy during a window inflates these slightly.',
      '',
    );
  }

  push('## Chart', '', `![req/s relative to the bare framework](chart.${pngWritten ? 'png' : 'svg'})`, '');

  const problems = cases.map((c) => byCase.get(c.id)).filter((m) => m.problems.length || m.failed.length);
  if (problems.length) {
    push('## Problems', '');
    for (const m of problems)
      push(`- ${m.case}: ${[...m.problems, ...m.failed.map((f) => `failed: ${f}`)].join('; ')}`);
    push('');
  }
  if (meta.notes.length || meta.skipped.length) {
    push('## Not measured', '');
    for (const note of meta.notes) push(`- ${note}`);
    for (const s of meta.skipped) push(`- ${s.case}: needs ${s.missing.join(', ')}`);
    push('');
  }
  return lines.join('\n');
}

function quietness(cases, byCase) {
  const local = cases
    .filter((c) => !c.upstream && c.store !== 'redis' && c.store !== 'postgres')
    .map((c) => byCase.get(c.id));
  const others = local.map((m) => m.otherCores).filter(Number.isFinite);
  return {
    busy: median(cases.map((c) => byCase.get(c.id).machineBusyCores)),
    server: median(local.map((m) => m.serverCores)),
    loadgen: median(local.map((m) => m.loadgenCores)),
    other: median(others),
    otherMin: others.length ? Math.min(...others) : undefined,
    otherMax: others.length ? Math.max(...others) : undefined,
  };
}

function renderPng(svgPath, pngPath) {
  for (const [command, argv] of [
    ['rsvg-convert', ['-b', 'white', '-o', pngPath, svgPath]],
    ['inkscape', [svgPath, '--export-type=png', `--export-filename=${pngPath}`]],
  ]) {
    try {
      execFileSync(command, argv, { stdio: 'ignore' });
      return true;
    } catch {
      // Not installed; try the next renderer.
    }
  }
  return false;
}

export function writeReport({ outDir, meta, cases, runs }) {
  const byCase = summarize(cases, runs);
  const targets = evaluateTargets(byCase, meta);
  const peers = evaluatePeers(cases, byCase);
  const svgPath = join(outDir, 'chart.svg');
  writeFileSync(svgPath, chartSvg({ cases, byCase, meta }));
  const pngWritten = renderPng(svgPath, join(outDir, 'chart.png'));
  // The analysis is written by hand as dated notes beside the results, never into them: a run rewrites outDir.
  const analysis = existsSync(NOTES) ? `${relative(outDir, NOTES).split('\\').join('/')}/` : undefined;
  writeFileSync(join(outDir, 'RESULTS.md'), markdown({ meta, cases, byCase, targets, peers, pngWritten, analysis }));
  writeFileSync(
    join(outDir, 'results.json'),
    `${JSON.stringify({ meta, summary: [...byCase.values()], targets, peers, runs }, null, 2)}\n`,
  );
  return ['RESULTS.md', 'results.json', 'chart.svg', ...(pngWritten ? ['chart.png'] : [])].map((f) => join(outDir, f));
}
