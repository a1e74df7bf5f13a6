import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, freePort, postJson, ROOT, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// The gateway as users run it: `idempo serve` in its own process, killed and restarted for real.
let upstream: Awaited<ReturnType<typeof startUpstream>>;
const dir = mkdtempSync(join(tmpdir(), 'idempo-gw-'));

beforeAll(async () => {
  upstream = await startUpstream(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/slow') await sleep(Number(url.searchParams.get('ms') ?? 1_000));
    res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ n: upstream.hits.length }));
  });
});

afterAll(async () => {
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('idempo serve as a process', () => {
  it('survives SIGKILL on SQLite: completed keys still replay, an in-flight key is retryable once its lease passes', async () => {
    const store = `sqlite:${join(dir, 'kill.db')}`;
    const port = await freePort();
    const args = ['--upstream', upstream.url, '--port', String(port), '--store', store, '--lease', '1s'];
    const first = await spawnGateway(args);
    const done = await postJson(`${first.url}/pay`, { amount: 1 }, 'kill-done');
    const doneBody = await done.text();
    expect(done.status).toBe(201);

    // A request still running upstream when the gateway dies.
    const inflight = postJson(`${first.url}/slow?ms=1500`, { amount: 2 }, 'kill-inflight').catch(
      (error: unknown) => error,
    );
    await sleep(300);
    first.child.kill('SIGKILL');
    expect((await first.exited).signal).toBe('SIGKILL');
    expect(await inflight).toBeInstanceOf(Error);

    const second = await spawnGateway(args);
    try {
      const replay = await postJson(`${second.url}/pay`, { amount: 1 }, 'kill-done');
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe(doneBody);

      const hitsBefore = upstream.hits.filter((h) => h.url.startsWith('/slow')).length;
      await sleep(1_300);
      const retry = await postJson(`${second.url}/slow?ms=1500`, { amount: 2 }, 'kill-inflight');
      expect(retry.status).toBe(201);
      expect(upstream.hits.filter((h) => h.url.startsWith('/slow')).length).toBe(hitsBefore + 1);
      const recovered = second.logs.map((line) => JSON.parse(line)).find((entry) => entry.type === 'recovered');
      expect(recovered?.key).toBe('kill-inflight');
    } finally {
      second.child.kill('SIGTERM');
      await second.exited;
    }
  });

  it('drains in-flight requests on SIGTERM, then exits 0 and stops listening', async () => {
    const gateway = await spawnGateway([
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      `sqlite:${join(dir, 'drain.db')}`,
    ]);
    const pending = postJson(`${gateway.url}/slow?ms=800`, { a: 1 }, 'drain-1');
    await sleep(200);
    gateway.child.kill('SIGTERM');
    const res = await pending;
    expect(res.status).toBe(201);
    expect((await res.json()).n).toBeGreaterThan(0);
    expect(await gateway.exited).toEqual({ code: 0, signal: null });
    await expect(fetch(`${gateway.url}/healthz`)).rejects.toThrow();
    expect(gateway.logs.some((line) => line.includes('idempo gateway draining'))).toBe(true);
  });

  it('takes its settings from environment variables', async () => {
    const gateway = await spawnGateway([], {
      IDEMPO_UPSTREAM: upstream.url,
      IDEMPO_PORT: '0',
      IDEMPO_STORE: 'memory:',
      IDEMPO_REQUIRE_KEY: '/env-required',
    });
    try {
      expect((await postJson(`${gateway.url}/env-required`, {})).status).toBe(400);
      expect((await postJson(`${gateway.url}/env-optional`, {})).status).toBe(201);
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }
  });

  it('exits 1 with a clear message on bad flags', () => {
    const missing = spawnSync(process.execPath, [CLI, 'serve'], {
      cwd: ROOT,
      encoding: 'utf8',
      env: { ...process.env, IDEMPO_UPSTREAM: '' },
    });
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/--upstream/);
    const badStore = spawnSync(
      process.execPath,
      [CLI, 'serve', '--upstream', 'http://127.0.0.1:1', '--store', 'mongo://x'],
      {
        cwd: ROOT,
        encoding: 'utf8',
      },
    );
    expect(badStore.status).toBe(1);
    expect(badStore.stderr).toMatch(/IDEMPO_CONFIG_INVALID: --store: unsupported store URL/);
    const badTtl = spawnSync(
      process.execPath,
      [CLI, 'serve', '--upstream', 'http://127.0.0.1:1', '--store', 'memory:', '--ttl', 'forever'],
      {
        cwd: ROOT,
        encoding: 'utf8',
      },
    );
    expect(badTtl.status).toBe(1);
    expect(badTtl.stderr).toMatch(
      /--ttl <duration>' argument 'forever' is invalid\. expected a duration such as 500ms, 30s/,
    );
  });
});
