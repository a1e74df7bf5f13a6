import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createIdempotency } from '../../src/index.js';
import { createSqliteStore } from '../../src/stores/sqlite.js';
import { postJson, sleep } from '../helpers/servers.js';

const dir = mkdtempSync(join(tmpdir(), 'idempo-mp-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function message<T>(child: ChildProcess, test: (m: T) => boolean): Promise<T> {
  return new Promise((resolve) => {
    const on = (m: T) => {
      if (test(m)) {
        child.off('message', on);
        resolve(m);
      }
    };
    child.on('message', on);
  });
}

async function startWorkers(count: number, dbPath: string, concurrent: 'reject' | 'wait') {
  return Promise.all(
    Array.from({ length: count }, async () => {
      const child = fork(new URL('./worker.js', import.meta.url), {
        env: { ...process.env, DB_PATH: dbPath, CONCURRENT: concurrent },
      });
      const { port } = await message<{ port: number }>(child, (m) => 'port' in m);
      return { child, url: `http://127.0.0.1:${port}` };
    }),
  );
}

async function executionsOf(workers: { child: ChildProcess }[]): Promise<Record<string, number>> {
  const totals: Record<string, number> = {};
  for (const { child } of workers) {
    const reply = message<{ executions: Record<string, number> }>(child, (m) => 'executions' in m);
    child.send('stats');
    for (const [key, n] of Object.entries((await reply).executions)) totals[key] = (totals[key] ?? 0) + n;
  }
  return totals;
}

async function stop(workers: { child: ChildProcess }[]) {
  await Promise.all(
    workers.map(({ child }) => {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.send('stop');
      return exited;
    }),
  );
}

describe('several processes on one SQLite file', () => {
  it('4 processes × 200 concurrent requests on 10 keys: every key runs exactly once', async () => {
    const workers = await startWorkers(4, join(dir, 'reject.db'), 'reject');
    try {
      const keys = Array.from({ length: 10 }, (_, i) => `mp-${i}`);
      const responses = await Promise.all(
        Array.from({ length: 200 }, (_, i) => postJson(`${workers[i % 4]?.url}/pay`, { amount: 1 }, keys[i % 10])),
      );
      const statuses = responses.map((r) => r.status);
      expect(statuses.filter((s) => s === 201).length).toBeGreaterThanOrEqual(10);
      expect(statuses.every((s) => s === 201 || s === 409)).toBe(true);
      const totals = await executionsOf(workers);
      expect(Object.keys(totals).sort()).toEqual([...keys].sort());
      for (const key of keys) expect(totals[key]).toBe(1);
      const replays = await Promise.all(
        keys.map((key, i) => postJson(`${workers[i % 4]?.url}/pay`, { amount: 1 }, key)),
      );
      expect(replays.every((r) => r.headers.get('idempotent-replayed') === 'true')).toBe(true);
    } finally {
      await stop(workers);
    }
  });

  it("with concurrent: 'wait', 200 concurrent requests on one key across 4 processes: one execution, one body for all", async () => {
    const workers = await startWorkers(4, join(dir, 'wait.db'), 'wait');
    try {
      const responses = await Promise.all(
        Array.from({ length: 200 }, (_, i) => postJson(`${workers[i % 4]?.url}/pay`, { amount: 1 }, 'one-key')),
      );
      const bodies = await Promise.all(responses.map((r) => r.text()));
      expect(new Set(responses.map((r) => r.status))).toEqual(new Set([201]));
      expect(new Set(bodies).size).toBe(1);
      expect((await executionsOf(workers))['one-key']).toBe(1);
    } finally {
      await stop(workers);
    }
  });
});

describe('fencing across processes', () => {
  it('an owner stopped past its lease loses the key; its late completion is refused and replays return the new owner’s response', async () => {
    const path = join(dir, 'fence.db');
    const owner = fork(new URL('./owner.js', import.meta.url), { env: { ...process.env, DB_PATH: path } });
    const store = createSqliteStore({ path });
    try {
      const running = message<{ running: boolean }>(owner, (m) => 'running' in m);
      const done = message<{ status: number; body: string; events: string[]; aborted: boolean }>(
        owner,
        (m) => 'done' in m,
      );
      owner.send({ key: 'fenced' });
      await running;
      owner.kill('SIGSTOP');
      await sleep(800);

      const events: string[] = [];
      const idem = createIdempotency({ store, lease: 400, ttl: '1h', onEvent: (e) => events.push(e.type) });
      const request = () =>
        new Request('http://owner.test/pay', {
          method: 'POST',
          headers: { 'idempotency-key': 'fenced' },
          body: '{"a":1}',
        });
      const taken = await idem.handle(request(), async (_req, ctx) => {
        expect(ctx.recovered).toBe(true);
        return new Response('from-B', { status: 201 });
      });
      expect(await taken.text()).toBe('from-B');
      expect(events).toEqual(['recovered', 'executed']);

      owner.kill('SIGCONT');
      const late = await done;
      expect(late.events).toContain('lease_lost');
      expect(late.events).not.toContain('executed');
      expect(late.aborted).toBe(true);
      // The stalled owner's own caller does not get a result that was not kept: it is told to retry.
      expect(late.status).toBe(409);
      expect(JSON.parse(late.body).code).toBe('IDEMPO_LEASE_LOST');

      const replay = await idem.handle(request(), async () => new Response('must not run'));
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe('from-B');
    } finally {
      owner.kill('SIGKILL');
      await store.close();
    }
  });
});
