/**
 * Summarises a V8 .cpuprofile (from `node bench/run.js --profile`, or `node --cpu-prof`): the
 * functions with the most self time, and self time by where the code lives (idempo's dist/, each
 * package in node_modules, Node's internals, GC, idle).
 *
 *   node bench/profile.js bench/results/raw/profiles/fastify-idempo-memory-fresh.cpuprofile [--top 30]
 */
import { readFileSync } from 'node:fs';
import { parseToolArgs, refuse } from './lib/cli.js';

const { values, positionals } = parseToolArgs(import.meta.url, {
  allowPositionals: true,
  options: { top: { type: 'string', default: '30', number: 'count' } },
});
if (positionals.length === 0) refuse(import.meta.url, 'name at least one FILE.cpuprofile');

for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, 'utf8'));
  const self = new Map();
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const deltas = profile.timeDeltas;
  // Each sample's time is the delta to the next one; attribute it to the sampled node.
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]);
    const dt = deltas[i + 1] ?? 0;
    self.set(node, (self.get(node) ?? 0) + dt);
  }
  const total = [...self.values()].reduce((a, b) => a + b, 0);
  const idle = [...self].filter(([n]) => n.callFrame.functionName === '(idle)').reduce((a, [, t]) => a + t, 0);
  const busy = total - idle;

  const byFunction = new Map();
  const byPlace = new Map();
  for (const [node, time] of self) {
    const { functionName, url, lineNumber } = node.callFrame;
    if (functionName === '(idle)') continue;
    const place = placeOf(url, functionName);
    const key = `${functionName || '(anonymous)'}  ${shortUrl(url)}${url ? `:${lineNumber + 1}` : ''}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + time);
    byPlace.set(place, (byPlace.get(place) ?? 0) + time);
  }
  console.log(`\n${file}: ${(total / 1e3).toFixed(0)} ms sampled, ${((busy / total) * 100).toFixed(1)}% busy\n`);
  console.log('self time by place (% of busy time)');
  for (const [place, time] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.log(`  ${((time / busy) * 100).toFixed(1).padStart(5)}%  ${place}`);
  }
  console.log(`\ntop ${values.top} functions by self time (% of busy time)`);
  for (const [key, time] of [...byFunction].sort((a, b) => b[1] - a[1]).slice(0, values.top)) {
    console.log(`  ${((time / busy) * 100).toFixed(1).padStart(5)}%  ${key}`);
  }
  console.log('\ninclusive time of idempo functions (% of busy time)');
  const inclusive = inclusiveTimes(profile, self);
  for (const [key, time] of [...inclusive].sort((a, b) => b[1] - a[1]).slice(0, 25)) {
    console.log(`  ${((time / busy) * 100).toFixed(1).padStart(5)}%  ${key}`);
  }
}

function shortUrl(url) {
  if (!url) return '';
  const at = url.lastIndexOf('/node_modules/');
  if (at !== -1) return url.slice(at + '/node_modules/'.length);
  const dist = url.indexOf('/dist/');
  if (dist !== -1) return url.slice(dist + 1);
  const bench = url.indexOf('/bench/');
  if (bench !== -1) return url.slice(bench + 1);
  return url.replace(/^file:\/\//, '');
}

function placeOf(url, functionName) {
  if (!url) return functionName.startsWith('(') ? functionName : '(native/V8)';
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  const at = url.lastIndexOf('/node_modules/');
  if (at !== -1) {
    const rest = url.slice(at + '/node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.includes('/dist/')) return `idempo ${url.slice(url.indexOf('/dist/') + 6).split('/')[0]}`;
  if (url.includes('/bench/')) return 'bench (handler, harness)';
  return url;
}

/** Inclusive (self + callees) time of each function defined in idempo's dist/, counted once per sample. */
function inclusiveTimes(profile, self) {
  const parent = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node);
  const result = new Map();
  for (const [node, time] of self) {
    const seen = new Set();
    for (let n = node; n; n = parent.get(n.id)) {
      const { functionName, url, lineNumber } = n.callFrame;
      if (!url.includes('/dist/')) continue;
      const key = `${functionName || '(anonymous)'}  ${shortUrl(url)}:${lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      result.set(key, (result.get(key) ?? 0) + time);
    }
  }
  return result;
}
