import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, postJson, ROOT, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// `idempo serve --admin-port`: metrics and key usage on a listener of their own, the proxied
// namespace left to the upstream; and traces, when an OpenTelemetry SDK is loaded into the process.
let upstream: Awaited<ReturnType<typeof startUpstream>>;
const dir = mkdtempSync(join(tmpdir(), 'idempo-admin-'));

beforeAll(async () => {
  upstream = await startUpstream((req, res) => {
    res.writeHead(req.url === '/metrics' ? 200 : 201, { 'content-type': 'text/plain' }).end(`upstream ${req.url}`);
  });
});

afterAll(async () => {
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

/** One series' value in a Prometheus text page. */
function series(page: string, name: string): number | undefined {
  const line = page.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

describe('idempo serve --admin-port', () => {
  it('serves metrics and key usage on the admin port, leaves /metrics on the main port to the upstream, and logs a scope over its threshold', async () => {
    const adminPort = await freePort();
    const config = join(dir, 'config.json');
    writeFileSync(config, JSON.stringify({ usage: { thresholds: { mismatches: 2 } } }));
    const gateway = await spawnGateway([
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      'memory:',
      '--admin-port',
      String(adminPort),
      '--scope-header',
      'x-tenant',
      '--require-key',
      '/orders/*',
      '--config',
      config,
    ]);
    try {
      const admin = `http://127.0.0.1:${adminPort}`;
      const proxied = await fetch(`${gateway.url}/metrics`);
      expect(await proxied.text()).toBe('upstream /metrics');

      const tenant = { 'x-tenant': 'acme' };
      expect((await postJson(`${gateway.url}/pay`, { a: 1 }, 'k1', tenant)).status).toBe(201);
      expect((await postJson(`${gateway.url}/pay`, { a: 1 }, 'k1', tenant)).headers.get('idempotent-replayed')).toBe(
        'true',
      );
      for (const a of [2, 3]) expect((await postJson(`${gateway.url}/pay`, { a }, 'k1', tenant)).status).toBe(422);
      expect((await postJson(`${gateway.url}/pay`, { a: 1 }, 'k9', { 'x-tenant': 'globex' })).status).toBe(201);
      // A path under a --require-key pattern is labelled with the pattern, never the path.
      expect((await postJson(`${gateway.url}/orders/o_77`, { a: 1 }, 'k10', tenant)).status).toBe(201);

      const response = await fetch(`${admin}/metrics`);
      expect(response.headers.get('content-type')).toContain('text/plain');
      const page = await response.text();
      expect(series(page, 'idempo_outcomes_total{type="executed",route=""}')).toBe(2);
      expect(series(page, 'idempo_outcomes_total{type="executed",route="/orders/*"}')).toBe(1);
      expect(series(page, 'idempo_outcomes_total{type="replayed",route=""}')).toBe(1);
      expect(series(page, 'idempo_outcomes_total{type="mismatch",route=""}')).toBe(2);
      expect(series(page, 'idempo_store_operation_duration_seconds_count{operation="claim",store="memory"}')).toBe(6);
      expect(series(page, 'idempo_keys_in_flight{store="memory"}')).toBe(0);
      expect(series(page, 'idempo_scope_events{counter="mismatches",scope="acme"}')).toBe(2);
      expect(series(page, 'idempo_scope_events{counter="new_keys",scope="globex"}')).toBe(1);
      expect(page).toContain('process_cpu_seconds_total');
      // No key and no raw path in any label.
      expect(page).not.toMatch(/k1|\/pay|o_77/);

      const usage = (await (await fetch(`${admin}/usage?counter=mismatches`)).json()) as {
        windowMs: number;
        counters: Record<string, { top: { scope: string; count: number }[]; other: number }>;
      };
      expect(usage.windowMs).toBe(300_000);
      expect(usage.counters).toEqual({ mismatches: { top: [{ scope: 'acme', count: 2 }], other: 0 } });
      expect((await fetch(`${admin}/usage?counter=nope`)).status).toBe(400);

      const index = (await (await fetch(`${admin}/`)).json()) as { routes: { method: string; path: string }[] };
      // Other routes (the admin page, keys) join these on the same listener.
      const listed = index.routes.map((r) => `${r.method} ${r.path}`);
      expect(listed.slice(0, 3)).toEqual(['GET /', 'GET /metrics', 'GET /usage']);
      expect((await fetch(`${admin}/healthz`)).status).toBe(404);
      const wrongMethod = await fetch(`${admin}/metrics`, { method: 'POST' });
      expect(wrongMethod.status).toBe(405);
      expect(wrongMethod.headers.get('allow')).toBe('GET');

      await sleep(100);
      const warned = gateway.logs
        .map((line) => JSON.parse(line) as { msg: string; scope?: string; counter?: string; count?: number })
        .filter((entry) => entry.msg.startsWith('idempo key usage'));
      expect(warned.map((e) => [e.scope, e.counter, e.count])).toEqual([['acme', 'mismatches', 2]]);
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }
  });

  it('traces keyed requests when an OpenTelemetry SDK is loaded, and carries the trace to the upstream', async () => {
    const spans = join(dir, 'spans.jsonl');
    writeFileSync(spans, '');
    const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', 'memory:'], {
      NODE_OPTIONS: `--import ${join(ROOT, 'test/gateway/otel-setup.mjs')}`,
      IDEMPO_TEST_SPANS: spans,
    });
    try {
      const clientTrace = '4bf92f3577b34da6a3ce929d0e0e4736';
      const response = await postJson(`${gateway.url}/orders`, { n: 1 }, 'traced-key', {
        traceparent: `00-${clientTrace}-00f067aa0ba902b7-01`,
      });
      expect(response.status).toBe(201);
      const hit = upstream.hits.find((h) => h.url === '/orders');
      await sleep(100);
      const finished = readFileSync(spans, 'utf8')
        .trim()
        .split('\n')
        .map(
          (line) =>
            JSON.parse(line) as {
              name: string;
              traceId: string;
              spanId: string;
              parent?: string;
              attributes: Record<string, unknown>;
            },
        );
      const request = finished.find((s) => s.name === 'idempo.request');
      expect(request?.traceId).toBe(clientTrace);
      expect(request?.parent).toBe('00f067aa0ba902b7');
      expect(request?.attributes['idempo.outcome']).toBe('executed');
      expect(request?.attributes['http.response.status_code']).toBe(201);
      expect(JSON.stringify(finished)).not.toContain('traced-key');
      // The upstream is called under the idempo.request span.
      expect(hit?.headers.traceparent).toBe(`00-${clientTrace}-${request?.spanId}-01`);
      expect(finished.filter((s) => s.parent === request?.spanId).map((s) => s.name)).toEqual([
        'idempo.store.claim',
        'idempo.store.complete',
      ]);
      expect(gateway.logs.some((line) => line.includes('idempo tracing'))).toBe(true);
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }
  });
});
