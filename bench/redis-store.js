/**
 * The Redis store alone, no engine and no HTTP, one or more builds in one process: rounds of 20
 * claims on new keys issued in one turn (as 20 connections of fresh requests would), then their 20
 * completions, on one ioredis client. Prints, per build, the process's CPU µs per claim +
 * completion: the median of the rounds and their spread. The builds take their rounds in turn
 * (A B, B A, …), so a slow second of this shared machine falls on each alike; Redis's own CPU is
 * not counted (INFO commandstats measures that).
 *
 *   npm run build && node bench/redis-store.js [--rounds N] [--pairs N] [--body-bytes N]
 *                                               [--non-ascii] [DIR…]
 *
 *   node bench/redis-store.js /tmp/before .   # a built worktree of an earlier commit, then this one
 *
 * Each DIR is a checkout whose `dist/` is built (default: this one). `--pairs` (default 6,000)
 * claim + completion pairs make a round and `--rounds` (default 8) rounds are measured per build,
 * after one round of warm-up. The stored response is the benches' own (a 66-byte JSON body)
 * unless `--body-bytes` asks for a JSON body of about that many bytes, ASCII, or with one
 * character in four outside ASCII with `--non-ascii`. Uses BENCH_REDIS_URL (default
 * redis://127.0.0.1:6379/11) and deletes the keys it made. Not for CI: it measures.
 */
import { randomUUID } from 'node:crypto';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Redis } from 'ioredis';
import { STORED_RESPONSE } from './lib/app.js';
import { parseToolArgs } from './lib/cli.js';
import { redisOptions } from './lib/env.js';
import { median } from './lib/report.js';
import { emptyRedis } from './lib/stores.js';

const { values, positionals } = parseToolArgs(import.meta.url, {
  options: {
    rounds: { type: 'string', default: '8', number: 'count' },
    pairs: { type: 'string', default: '6000', number: 'count' },
    'body-bytes': { type: 'string', number: 'count' },
    'non-ascii': { type: 'boolean', default: false },
  },
  allowPositionals: true,
});

const ROUNDS = values.rounds;
const BATCH = 20;
const TURNS = Math.ceil(values.pairs / BATCH);
const TTL = 60_000;
const FINGERPRINT = 'kq4DBn5m1XzQ0pT1b6Q8v2yq0Hn4Jq3W9VnJZ0e7ZQk';

function bodyOf() {
  if (values['body-bytes'] === undefined) return STORED_RESPONSE;
  const size = values['body-bytes'];
  // Four bytes a repeat either way ('é' is two in UTF-8), inside the 11 bytes of {"data":""}.
  const filler = values['non-ascii'] ? 'éxx' : 'exxx';
  const text = JSON.stringify({ data: filler.repeat(Math.max(0, Math.floor((size - 11) / 4))) });
  return { ...STORED_RESPONSE, headers: [STORED_RESPONSE.headers[0]], body: Buffer.from(text) };
}

const response = bodyOf();
const dirs = positionals.length > 0 ? positionals : ['.'];
const client = new Redis(redisOptions());
const prefix = `idempo-bench-redis-store:${randomUUID()}:`;
const builds = await Promise.all(
  dirs.map(async (dir, i) => {
    const { createRedisStore } = await import(pathToFileURL(resolve(dir, 'dist/stores/redis.js')).href);
    return { dir, store: createRedisStore({ client, prefix: `${prefix}${i}:` }), cpu: [] };
  }),
);

/** CPU µs of this process per claim + completion over one round. */
async function round(store) {
  const before = process.cpuUsage();
  for (let turn = 0; turn < TURNS; turn++) {
    const keys = Array.from({ length: BATCH }, () => randomUUID());
    const claims = await Promise.all(
      keys.map((key) => store.claim({ key, fingerprint: FINGERPRINT, leaseMs: TTL, ttlMs: TTL })),
    );
    const outcomes = await Promise.all(
      keys.map((key, i) => {
        const claim = claims[i];
        if (claim.status !== 'acquired') throw new Error(`expected acquired, got ${claim.status}`);
        return store.complete(key, claim.token, response, TTL);
      }),
    );
    if (outcomes.some((outcome) => outcome !== 'ok')) throw new Error(`a completion answered ${outcomes}`);
  }
  const used = process.cpuUsage(before);
  return (used.user + used.system) / (TURNS * BATCH);
}

try {
  for (const build of builds) await round(build.store);
  for (let i = 0; i < ROUNDS; i++) {
    const order = i % 2 === 0 ? builds : [...builds].reverse();
    for (const build of order) build.cpu.push(await round(build.store));
  }
  console.log(
    `${TURNS * BATCH} claim + completion pairs a round, ${ROUNDS} rounds a build, ${response.body.length}-byte body`,
  );
  for (const { dir, cpu } of builds) {
    const sorted = [...cpu].sort((a, b) => a - b);
    console.log(
      `${dir.padEnd(30)} ${median(cpu).toFixed(2).padStart(7)} µs CPU a pair (median; rounds ${sorted.map((v) => v.toFixed(1)).join(' ')})`,
    );
  }
} finally {
  for (const { store } of builds) await store.close?.();
  await emptyRedis(client, prefix);
  client.disconnect();
}
