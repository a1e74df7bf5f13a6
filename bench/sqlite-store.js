/**
 * The SQLite store alone, no engine and no HTTP: 20 concurrent loops of claim + complete on new
 * keys (as 20 connections of fresh requests would), then 20 loops of claims that replay. Prints
 * CPU µs per claim + complete and per replayed claim (the whole process, the checkpoint thread
 * included), the bytes the process wrote per claim + complete (WAL and checkpoints, from
 * /proc/self/io), and the pairs per second. Median of three rounds, each on a new file.
 * For before/after figures of store changes, run it alternately in two trees:
 *
 *   npm run build && node bench/sqlite-store.js [PAIRS] [--loops N]
 *
 * `--loops` (default 20) sets how many loops run at once, and so how many writes share a group
 * commit: fewer loops show what a commit costs when few requests are in flight (a gateway whose
 * requests wait on the upstream commits in smaller groups than 20 tight loops do).
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createSqliteStore } from 'idempo/sqlite';
import { STORED_RESPONSE as RESPONSE } from './lib/app.js';
import { parseToolArgs } from './lib/cli.js';
import { median } from './lib/report.js';

const { values, positionals } = parseToolArgs(import.meta.url, {
  options: { loops: { type: 'string', default: '20', number: 'count' } },
  allowPositionals: true,
});
const LOOPS = values.loops;
// A whole number of steps per loop, so the figures divide by what ran.
const PAIRS = Math.ceil(Number(positionals[0] ?? 40_000) / LOOPS) * LOOPS;
const TTL = 86_400_000;
const FINGERPRINT = createHash('sha256').update('body').digest('base64url');

/** Bytes this process has handed to write system calls (pwrite included), from /proc. */
function written() {
  return Number(/wchar: (\d+)/.exec(readFileSync('/proc/self/io', 'utf8'))?.[1] ?? Number.NaN);
}

/** A store key as the engine makes one: a SHA-256 in base64url, so keys land anywhere in key order. */
const newKey = () => createHash('sha256').update(randomUUID()).digest('base64url');

async function inLoops(total, step) {
  await Promise.all(
    Array.from({ length: LOOPS }, async () => {
      for (let i = 0; i < Math.ceil(total / LOOPS); i++) await step();
    }),
  );
}

async function round() {
  const dir = mkdtempSync(join(tmpdir(), 'idempo-bench-sqlite-'));
  const store = createSqliteStore({ path: join(dir, 'bench.db') });
  const pair = async (key) => {
    const claim = await store.claim({ key, fingerprint: FINGERPRINT, leaseMs: 30_000, ttlMs: TTL });
    if (claim.status !== 'acquired') throw new Error(`expected acquired, got ${claim.status}`);
    await store.complete(key, claim.token, RESPONSE, TTL);
  };
  await inLoops(10_000, () => pair(newKey())); // warms the JIT and gives the file some size
  let cpu = process.cpuUsage();
  const bytes = written();
  const start = performance.now();
  await inLoops(PAIRS, () => pair(newKey()));
  const fresh = process.cpuUsage(cpu);
  const seconds = (performance.now() - start) / 1000;
  const freshBytes = written() - bytes;

  const pool = Array.from({ length: 1000 }, newKey);
  for (const key of pool) await pair(key);
  let next = 0;
  const replay = async () => {
    const claim = await store.claim({
      key: pool[next++ % 1000],
      fingerprint: FINGERPRINT,
      leaseMs: 30_000,
      ttlMs: TTL,
    });
    if (claim.status !== 'replay') throw new Error(`expected replay, got ${claim.status}`);
  };
  await inLoops(10_000, replay);
  cpu = process.cpuUsage();
  await inLoops(PAIRS, replay);
  const replayed = process.cpuUsage(cpu);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return {
    freshUs: (fresh.user + fresh.system) / PAIRS,
    bytes: freshBytes / PAIRS,
    pairsPerSecond: PAIRS / seconds,
    replayUs: (replayed.user + replayed.system) / PAIRS,
  };
}

const rounds = [];
for (let i = 0; i < 3; i++) rounds.push(await round());
const show = (name, unit, digits) =>
  `${median(rounds.map((r) => r[name])).toFixed(digits)} ${unit} (${rounds.map((r) => r[name].toFixed(digits)).join(' ')})`;
console.log(`${LOOPS} loops, ${PAIRS} pairs per round`);
console.log(`fresh   ${show('freshUs', 'µs CPU per claim + complete', 1)}`);
console.log(`        ${show('bytes', 'bytes written per claim + complete', 0)}`);
console.log(`        ${show('pairsPerSecond', 'pairs/s', 0)}`);
console.log(`replay  ${show('replayUs', 'µs CPU per claim', 1)}`);
