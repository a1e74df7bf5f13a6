/**
 * Per-scope limits through a real `idempo serve` process: concurrent keyed requests over real
 * sockets, a slow upstream holding keys in flight, and the flags with their environment twins.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, postJson, ROOT, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

let upstream: Awaited<ReturnType<typeof startUpstream>>;
/** Requests the upstream is holding, released by the test. */
const held: (() => void)[] = [];

beforeAll(async () => {
  upstream = await startUpstream(async (req, res) => {
    if (req.url === '/hold') await new Promise<void>((resolve) => held.push(resolve));
    res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ n: upstream.hits.length }));
  });
});

afterAll(async () => {
  for (const release of held.splice(0)) release();
  await upstream.close();
});

async function withGateway(
  flags: string[],
  body: (url: string, logs: string[]) => Promise<void>,
  env: Record<string, string> = {},
) {
  const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', 'memory:', ...flags], env);
  try {
    await body(gateway.url, gateway.logs);
  } finally {
    for (const release of held.splice(0)) release();
    gateway.child.kill('SIGTERM');
    await gateway.exited;
  }
}

const hitsOf = (key: string) => upstream.hits.filter((hit) => hit.headers['idempotency-key'] === key).length;

describe('gateway limits', () => {
  it('--limit-in-flight: the third concurrent new key of a tenant gets 429 with Retry-After and never reaches the upstream; other tenants go on; the refused key runs once later', async () => {
    await withGateway(['--scope-header', 'x-tenant', '--limit-in-flight', '2'], async (url, logs) => {
      const acme = { 'x-tenant': 'acme' };
      const first = postJson(`${url}/hold`, { n: 1 }, 'in-flight-a', acme);
      const second = postJson(`${url}/hold`, { n: 2 }, 'in-flight-b', acme);
      for (let i = 0; i < 200 && held.length < 2; i++) await sleep(5);
      expect(held).toHaveLength(2);

      // Several more at once, over real sockets: every one refused, none forwarded.
      const refused = await Promise.all(
        ['in-flight-c', 'in-flight-d', 'in-flight-e'].map((key) => postJson(`${url}/hold`, { n: 3 }, key, acme)),
      );
      for (const response of refused) {
        expect(response.status).toBe(429);
        expect(response.headers.get('retry-after')).toBe('1');
        expect(response.headers.get('content-type')).toBe('application/problem+json');
        expect(((await response.json()) as { code: string }).code).toBe('IDEMPO_RATE_LIMITED');
      }
      expect(hitsOf('in-flight-c')).toBe(0);

      const other = await postJson(`${url}/pay`, { n: 4 }, 'in-flight-c', { 'x-tenant': 'globex' });
      expect(other.status).toBe(201);

      for (const release of held.splice(0)) release();
      expect((await first).status).toBe(201);
      expect((await second).status).toBe(201);

      // Nothing was claimed for the refused key: it runs now as a first request, once.
      const later = await postJson(`${url}/pay`, { n: 3 }, 'in-flight-c', acme);
      expect(later.status).toBe(201);
      expect(later.headers.get('idempotent-replayed')).toBeNull();
      const replay = await postJson(`${url}/pay`, { n: 3 }, 'in-flight-c', acme);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(upstream.hits.filter((hit) => hit.headers['x-tenant'] === 'acme' && hit.url === '/pay')).toHaveLength(1);

      // Each refusal is logged as a rate_limited event naming the limit.
      await sleep(50);
      const limited = logs.flatMap((line) => {
        try {
          const entry = JSON.parse(line) as { msg?: string; reason?: string; key?: string; status?: number };
          return entry.msg === 'idempotency rate_limited' ? [entry] : [];
        } catch {
          return [];
        }
      });
      expect(limited.map((entry) => entry.key).sort()).toEqual(['in-flight-c', 'in-flight-d', 'in-flight-e']);
      for (const entry of limited) expect(entry).toMatchObject({ reason: 'in_flight', status: 429 });
    });
  });

  it('--limit-new-keys from the environment, per client address without --scope-header', async () => {
    await withGateway(
      [],
      async (url) => {
        const statuses: number[] = [];
        const results = await Promise.all([1, 2, 3, 4, 5].map((n) => postJson(`${url}/pay`, { n }, `new-key-${n}`)));
        for (const response of results) statuses.push(response.status);
        expect(statuses.filter((s) => s === 201)).toHaveLength(3);
        const limited = results.filter((r) => r.status === 429);
        expect(limited).toHaveLength(2);
        const retryAfter = Number(limited[0]?.headers.get('retry-after'));
        expect(retryAfter).toBeGreaterThanOrEqual(1);
        expect(retryAfter).toBeLessThanOrEqual(60);
        // The refused keys never reached the upstream; the admitted ones did, once each.
        const ran = [1, 2, 3, 4, 5].filter((_n, i) => statuses[i] === 201);
        for (const n of [1, 2, 3, 4, 5]) expect(hitsOf(`new-key-${n}`)).toBe(ran.includes(n) ? 1 : 0);
      },
      { IDEMPO_LIMIT_NEW_KEYS: '3/1m' },
    );
  });

  it('takes limits from a --config file (limitNewKeys as text, limitInFlight as a number)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'idempo-limits-'));
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ limitInFlight: 5, limitNewKeys: '2/1m', limitScopes: 100 }));
    try {
      await withGateway(['--config', config], async (url) => {
        expect((await postJson(`${url}/pay`, { n: 1 }, 'config-1')).status).toBe(201);
        expect((await postJson(`${url}/pay`, { n: 2 }, 'config-2')).status).toBe(201);
        expect((await postJson(`${url}/pay`, { n: 3 }, 'config-3')).status).toBe(429);
        expect(hitsOf('config-3')).toBe(0);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses malformed limit flags with one line naming the flag', () => {
    for (const [flag, value] of [
      ['--limit-in-flight', '0'],
      ['--limit-in-flight', 'many'],
      ['--limit-new-keys', '600'],
      ['--limit-new-keys', '600/60'],
      ['--limit-scopes', '-1'],
    ] as const) {
      const out = spawnSync(process.execPath, [CLI, 'serve', '--upstream', upstream.url, flag, value], {
        cwd: ROOT,
        encoding: 'utf8',
        timeout: 10_000,
      });
      expect(out.status, `${flag} ${value}`).not.toBe(0);
      expect(out.stderr).toContain(flag);
    }
  });
});
