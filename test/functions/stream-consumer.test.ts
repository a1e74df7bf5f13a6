import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, describe, expect, it } from 'vitest';
import { ROOT, sleep } from '../helpers/servers.js';

// examples/functions/stream-consumer.js on the shared Redis: consumers that die after billing
// and before XACK, and one that picks their messages up, as Redis Streams redeliver them.
const redis = new Redis('redis://127.0.0.1:6379');
const dir = mkdtempSync(join(tmpdir(), 'idempo-streams-'));
afterAll(async () => {
  redis.disconnect();
  rmSync(dir, { recursive: true, force: true });
});

function consumer(name: string, env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, [join(ROOT, 'examples/functions/stream-consumer.js'), name], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

const exited = (child: ChildProcess) =>
  new Promise<void>((resolve) =>
    child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve()),
  );

async function run(unprotected: boolean) {
  const stream = `orders-${randomUUID()}`;
  const ledger = join(dir, `${stream}.txt`);
  writeFileSync(ledger, '');
  const ids: string[] = [];
  for (let i = 0; i < 12; i++)
    ids.push((await redis.xadd(stream, '*', 'order', `o-${i}`, 'amount', String(100 + i))) as string);
  const env = { STREAM: stream, LEDGER: ledger, ...(unprotected ? { UNPROTECTED: '1' } : {}) };
  // Two consumers die, each after billing a message it never acknowledges.
  for (const name of ['a', 'b']) await exited(consumer(name, { ...env, CRASH_AFTER: '3' }));
  await sleep(1_100);
  const survivor = consumer('c', env);
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    const [pending] = (await redis.xpending(stream, 'billing')) as [number];
    const billed = readFileSync(ledger, 'utf8').trim().split('\n').filter(Boolean);
    if (pending === 0 && new Set(billed.map((l) => l.split(' ')[0])).size === ids.length) break;
    await sleep(100);
  }
  survivor.kill('SIGTERM');
  await exited(survivor);
  const records = await redis.keys(`${stream}:idempo:*`);
  await redis.del(stream, ...records);
  const billed = readFileSync(ledger, 'utf8')
    .trim()
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ')[0]);
  return { ids, billed };
}

describe('a Redis Streams consumer group with makeIdempotent', () => {
  it('bills every message once although two consumers died between billing and XACK', async () => {
    const { ids, billed } = await run(false);
    expect(billed.sort()).toEqual([...ids].sort());
  }, 40_000);

  it('without idempo the same run bills the unacknowledged messages twice (the harness sees duplicates)', async () => {
    const { ids, billed } = await run(true);
    expect(new Set(billed)).toEqual(new Set(ids));
    expect(billed.length).toBe(ids.length + 2);
  }, 40_000);
});
