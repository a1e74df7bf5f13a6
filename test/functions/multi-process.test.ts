import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'idempo-functions-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function next<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve) => child.once('message', (m) => resolve(m as T)));
}

it('4 processes call one idempotent function on the same 25 keys at once: each key runs once, every caller gets its result', async () => {
  const ledger = join(dir, 'ledger.txt');
  writeFileSync(ledger, '');
  const env = { ...process.env, DB_PATH: join(dir, 'functions.db'), LEDGER: ledger };
  const workers = Array.from({ length: 4 }, () => fork(new URL('./worker.js', import.meta.url), { env }));
  try {
    await Promise.all(workers.map((w) => next(w)));
    const keys = Array.from({ length: 25 }, (_, i) => `order-${i}`);
    const replies = await Promise.all(
      workers.map((w) => {
        const reply = next<{ results: { chargeId?: string; by?: number; error?: string }[] }>(w);
        w.send({ keys });
        return reply;
      }),
    );
    const runs = readFileSync(ledger, 'utf8').trim().split('\n');
    expect(runs).toHaveLength(keys.length);
    expect(new Set(runs.map((line) => line.split(' ')[0]))).toEqual(new Set(keys));
    // Every process got the one result of each key, whichever process ran it.
    for (const [i, key] of keys.entries()) {
      const seen = replies.map((r) => r.results[i]);
      expect(seen.every((r) => r?.chargeId === `ch_${key}`)).toBe(true);
      expect(new Set(seen.map((r) => r?.by)).size).toBe(1);
    }
  } finally {
    for (const w of workers) w.send('stop');
    await Promise.all(workers.map((w) => new Promise((resolve) => w.once('exit', resolve))));
  }
});
