/**
 * The memory store alone, no engine and no HTTP: claim + complete on new keys, one after another,
 * with the store at its bound, and beside each pair the short-lived garbage a request makes (a
 * few dozen small objects), so that the young generation is collected about as often as in a
 * server. Prints CPU µs per claim + complete (the whole process, the collector's threads
 * included), per build the median of its turns, each the median of five rounds after the store
 * filled.
 *
 * What it shows is what a store that keeps its records costs the collector: records survive the
 * young generation's collections, which copy them, and then stay in the old generation, which
 * marks them.
 *
 *   npm run build && node bench/memory-store.js [--entries N] [--pairs N] [--turns N] [DIR…]
 *
 *   node bench/memory-store.js /tmp/before .   # a built worktree of an earlier commit, then this one
 *
 * Each DIR is a checkout whose `dist/` is built (default: this one). Each build is measured in a
 * process of its own, so that one store's records do not weigh on the other's collections, and
 * the builds take `--turns` (default 3) turns (A B, B A, …), so a slow minute of this shared
 * machine falls on each alike. Not for CI: it measures.
 */
import { execFileSync } from 'node:child_process';
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseToolArgs } from './lib/cli.js';
import { median } from './lib/report.js';

const { values, positionals } = parseToolArgs(import.meta.url, {
  allowPositionals: true,
  options: {
    entries: { type: 'string', default: '100000', number: 'count' },
    pairs: { type: 'string', default: '200000', number: 'count' },
    turns: { type: 'string', default: '3', number: 'count' },
    one: { type: 'string' },
  },
});
const ENTRIES = values.entries;
const PAIRS = values.pairs;
const TTL = 86_400_000;
const CONTENT_TYPE = 'application/json; charset=utf-8';

if (values.one === undefined) {
  const dirs = positionals.length > 0 ? positionals : ['.'];
  const { turns } = values;
  const figures = new Map(dirs.map((dir) => [dir, []]));
  for (let turn = 0; turn < turns; turn++) {
    for (const dir of turn % 2 === 0 ? dirs : [...dirs].reverse()) {
      const args = [
        fileURLToPath(import.meta.url),
        '--one',
        dir,
        '--entries',
        String(ENTRIES),
        '--pairs',
        String(PAIRS),
      ];
      const perPair = Number(execFileSync(process.execPath, args, { encoding: 'utf8' }));
      figures.get(dir).push(perPair);
      console.log(`${dir}: ${perPair.toFixed(2)} µs CPU per claim + complete`);
    }
  }
  for (const [dir, list] of figures) {
    console.log(`${dir}: median ${median(list).toFixed(2)} µs (${list.map((x) => x.toFixed(2)).join(' ')})`);
  }
  process.exit(0);
}

const { createMemoryStore } = await import(pathToFileURL(resolve(values.one, 'dist/stores/memory.js')).href);
const store = createMemoryStore({ maxEntries: ENTRIES, sweepInterval: false });
const { claim, complete } = store.sync;
let garbage;
let sequence = 0;

/** One fresh request's store work, with what the engine makes for it: its key, fingerprint and response. */
function pair() {
  const n = sequence++;
  // New strings of the engine's shape (43 characters, as a SHA-256 in base64url), made cheaply so
  // that the figure is the store's.
  const key = n.toString(36).padStart(43, '_');
  const fingerprint = n.toString(36).padStart(43, '-');
  garbage = Array.from({ length: 12 }, (_, i) => ({ n, i, text: `x${i}`, pair: [i, n] }));
  const claimed = claim({ key, fingerprint, leaseMs: 60_000, ttlMs: TTL });
  if (claimed.status !== 'acquired') throw new Error(`expected acquired, got ${claimed.status}`);
  const body = Buffer.from(JSON.stringify({ id: `pay_${n}`, amount: 1999, currency: 'usd', status: 'succeeded' }));
  const headers = [
    ['content-type', CONTENT_TYPE],
    ['content-length', String(body.length)],
  ];
  if (complete(key, claimed.token, { status: 201, headers, body }, TTL) !== 'ok') throw new Error('expected ok');
}

for (let i = 0; i < ENTRIES * 2.5; i++) pair();
const rounds = [];
for (let round = 0; round < 5; round++) {
  const before = process.cpuUsage();
  for (let i = 0; i < PAIRS; i++) pair();
  const used = process.cpuUsage(before);
  rounds.push((used.user + used.system) / PAIRS);
}
if (garbage.length !== 12 || store.size < ENTRIES * 0.98) throw new Error('expected a full store');
process.stdout.write(String(median(rounds)));
await store.close();
