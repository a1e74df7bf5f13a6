import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Gateway, startGateway } from '../../src/gateway/index.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import type { IdempotencyStore } from '../../src/vocabulary/index.js';
import { freePort, postJson, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// Every row of the protocol table, over HTTP, through the gateway in front of a real upstream.
let upstream: Awaited<ReturnType<typeof startUpstream>>;
let gateway: Gateway;
let failNext = 0;
let largeFinished = false;
/** The lease-lost row: the upstream tells the test it has sent its head, then waits for the test. */
let stallAnswered: () => void = () => {};
let stallGate: Promise<void> = Promise.resolve();

beforeAll(async () => {
  upstream = await startUpstream(async (req, res, body) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/slow') await sleep(Number(url.searchParams.get('ms') ?? 300));
    if (url.pathname === '/deadline') await sleep(Number(req.headers['x-delay-ms'] ?? 0));
    if (url.pathname === '/slow-once' && hitsFor('/slow-once') === 1) await sleep(2_500);
    if (url.pathname === '/flaky' && failNext > 0) {
      failNext--;
      res.writeHead(503, { 'content-type': 'text/plain' }).end('try again');
      return;
    }
    if (url.pathname === '/stall') {
      res.writeHead(201, { 'content-type': 'application/json' });
      if (hitsFor('/stall') > 1) {
        res.end(JSON.stringify({ owner: 'second', redrive: req.headers['idempo-redrive'] ?? null }));
        return;
      }
      res.write('{"owner":');
      stallAnswered();
      await stallGate;
      res.end('"first"}');
      return;
    }
    if (url.pathname === '/large-slow') {
      // 4 MiB in 64 KiB chunks, slowly: the client is gone long before the end.
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      const chunk = Buffer.alloc(64 * 1024, 120);
      for (let i = 0; i < 64; i++) {
        if (!res.write(chunk)) await new Promise((resolve) => res.once('drain', resolve));
        if (i % 8 === 0) await sleep(25);
      }
      res.end();
      largeFinished = true;
      return;
    }
    if (url.pathname === '/cut-off') {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '100' });
      res.write('partial;');
      await sleep(20);
      res.destroy();
      return;
    }
    if (url.pathname === '/stream') {
      res.writeHead(200, { 'content-type': 'text/plain', 'x-streamed': 'yes' });
      for (let i = 0; i < 5; i++) {
        res.write(`chunk-${i};`);
        await sleep(5);
      }
      res.end('end');
      return;
    }
    res.writeHead(201, {
      'content-type': 'application/json',
      'x-upstream': 'yes',
      'set-cookie': 'sid=abc',
      connection: 'keep-alive',
    });
    res.end(JSON.stringify({ n: upstream.hits.length, echo: body.toString() }));
  });
  gateway = await startGateway({
    upstream: upstream.url,
    port: 0,
    store: 'memory:',
    requireKey: ['/required/**'],
    scopeHeader: 'x-tenant',
    lease: '2s',
    upstreamTimeout: '500ms',
    logger: false,
    idempotency: { maxBodyBytes: 1024 },
  });
});

afterAll(async () => {
  await gateway.close();
  await upstream.close();
});

const hitsFor = (url: string) => upstream.hits.filter((h) => h.url === url).length;

describe('gateway protocol over HTTP', () => {
  it('passes GET and PUT through untouched, key or not', async () => {
    const before = hitsFor('/things');
    await fetch(`${gateway.url}/things`, { headers: { 'idempotency-key': 'g1' } });
    await fetch(`${gateway.url}/things`, { headers: { 'idempotency-key': 'g1' } });
    await fetch(`${gateway.url}/things`, { method: 'PUT', headers: { 'idempotency-key': 'g1' }, body: 'x' });
    expect(hitsFor('/things') - before).toBe(3);
  });

  it('passes keyless POSTs through when keys are optional', async () => {
    const before = hitsFor('/optional');
    await postJson(`${gateway.url}/optional`, { a: 1 });
    const res = await postJson(`${gateway.url}/optional`, { a: 1 });
    expect(res.status).toBe(201);
    expect(hitsFor('/optional') - before).toBe(2);
  });

  it('answers 400 to a keyless POST on a --require-key path', async () => {
    const res = await postJson(`${gateway.url}/required/payments`, { a: 1 });
    expect(res.status).toBe(400);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect((await res.json()).code).toBe('IDEMPO_KEY_MISSING');
    expect(hitsFor('/required/payments')).toBe(0);
  });

  it.each([
    ['too long', 'k'.repeat(300)],
    ['with a space inside quotes missing', '"open'],
  ])('answers 400 to a key %s', async (_label, key) => {
    const res = await postJson(`${gateway.url}/bad-key`, { a: 1 }, key);
    expect(res.status).toBe(400);
    expect((await res.json()).code).toBe('IDEMPO_KEY_INVALID');
    expect(hitsFor('/bad-key')).toBe(0);
  });

  it('runs the first request and replays it byte for byte, headers included', async () => {
    const first = await postJson(`${gateway.url}/pay`, { amount: 5 }, 'replay-1');
    const firstBody = await first.text();
    expect(first.status).toBe(201);
    expect(first.headers.get('set-cookie')).toBe('sid=abc');
    const replay = await postJson(`${gateway.url}/pay`, { amount: 5 }, 'replay-1');
    expect(replay.status).toBe(201);
    expect(await replay.text()).toBe(firstBody);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.headers.get('x-upstream')).toBe('yes');
    expect(replay.headers.get('content-type')).toBe('application/json');
    expect(replay.headers.get('set-cookie')).toBeNull();
    expect(hitsFor('/pay')).toBe(1);
  });

  it('replays a streamed upstream response whole', async () => {
    const first = await postJson(`${gateway.url}/stream`, {}, 'stream-1');
    const text = await first.text();
    expect(text).toBe('chunk-0;chunk-1;chunk-2;chunk-3;chunk-4;end');
    const replay = await postJson(`${gateway.url}/stream`, {}, 'stream-1');
    expect(await replay.text()).toBe(text);
    expect(replay.headers.get('x-streamed')).toBe('yes');
  });

  it('cuts the response off and keeps the key when the upstream body fails mid-stream, then re-drives it marked', async () => {
    const first = await postJson(`${gateway.url}/cut-off`, {}, 'cut-off-1');
    await expect(first.text()).rejects.toThrow();
    // The upstream may have done the work: the key stays in flight, nothing is run again.
    const retry = await postJson(`${gateway.url}/cut-off`, {}, 'cut-off-1');
    expect(retry.status).toBe(409);
    expect((await retry.json()).code).toBe('IDEMPO_CONFLICT');
    expect(hitsFor('/cut-off')).toBe(1);
    // Once the lease (2 s) has passed, a retry takes the key over and tells the upstream so.
    await sleep(2_200);
    const redriven = await postJson(`${gateway.url}/cut-off`, {}, 'cut-off-1');
    await expect(redriven.text()).rejects.toThrow();
    const hits = upstream.hits.filter((h) => h.url === '/cut-off');
    expect(hits).toHaveLength(2);
    expect(hits[0]?.headers['idempo-redrive']).toBeUndefined();
    expect(Number(hits[1]?.headers['idempo-redrive'])).toBeGreaterThan(0);
    expect(hits[1]?.headers['idempotency-key']).toBe('cut-off-1');
  });

  it('forwards a keyed chunked body to the upstream byte for byte, and replays it', async () => {
    const send = () =>
      fetch(`${gateway.url}/chunked`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'idempotency-key': 'chunked-1' },
        body: new ReadableStream({
          start(controller) {
            for (const part of ['{"a":', '"', 'x'.repeat(300), '"}'])
              controller.enqueue(new TextEncoder().encode(part));
            controller.close();
          },
        }),
        duplex: 'half',
      } as RequestInit);
    const first = await send();
    expect(first.status).toBe(201);
    expect((await first.json()).echo).toBe(`{"a":"${'x'.repeat(300)}"}`);
    const replay = await send();
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(hitsFor('/chunked')).toBe(1);
  });

  it('answers 409 with Retry-After to a duplicate while the first runs', async () => {
    const first = postJson(`${gateway.url}/slow?ms=400`, { a: 1 }, 'dup-1');
    await sleep(100);
    const dup = await postJson(`${gateway.url}/slow?ms=400`, { a: 1 }, 'dup-1');
    expect(dup.status).toBe(409);
    expect(dup.headers.get('retry-after')).toBe('1');
    expect((await dup.json()).code).toBe('IDEMPO_CONFLICT');
    expect((await first).status).toBe(201);
  });

  it('answers 422 to the key reused with another body, and keeps the original', async () => {
    await postJson(`${gateway.url}/mismatch`, { amount: 1 }, 'mm-1');
    const res = await postJson(`${gateway.url}/mismatch`, { amount: 2 }, 'mm-1');
    expect(res.status).toBe(422);
    expect((await res.json()).code).toBe('IDEMPO_MISMATCH');
    const replay = await postJson(`${gateway.url}/mismatch`, { amount: 1 }, 'mm-1');
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(hitsFor('/mismatch')).toBe(1);
  });

  it('releases the key when the upstream answers 5xx, so the retry runs', async () => {
    failNext = 1;
    expect((await postJson(`${gateway.url}/flaky`, { a: 1 }, 'flaky-1')).status).toBe(503);
    const retry = await postJson(`${gateway.url}/flaky`, { a: 1 }, 'flaky-1');
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(hitsFor('/flaky')).toBe(2);
  });

  it('answers 504 when the upstream answers too late, keeps waiting past the lease, and replays the late answer', async () => {
    const res = await postJson(`${gateway.url}/slow-once`, { a: 1 }, 'timeout-1');
    expect(res.status).toBe(504);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await res.json()).code).toBe('IDEMPO_UPSTREAM_TIMEOUT');
    const meanwhile = await postJson(`${gateway.url}/slow-once`, { a: 1 }, 'timeout-1');
    expect(meanwhile.status).toBe(409);
    // The upstream answers after 2.5 s, past the 2 s lease: the gateway renewed it while it waited.
    await sleep(2_300);
    const retry = await postJson(`${gateway.url}/slow-once`, { a: 1 }, 'timeout-1');
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(hitsFor('/slow-once')).toBe(1);
  });

  it('reads a large answer whole after its client left, keeps no body past maxResponseBytes, and keeps the key completed', async () => {
    const gw = await startGateway({
      upstream: upstream.url,
      port: 0,
      store: 'memory:',
      logger: false,
      idempotency: { maxResponseBytes: 256 * 1024 },
    });
    try {
      // A client that reads the first bytes of the answer, then really hangs up.
      const { hostname, port } = new URL(gw.url);
      const head = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), hostname, () => {
          socket.write(
            `POST /large-slow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nidempotency-key: large-1\r\ncontent-length: 7\r\n\r\n{"a":1}`,
          );
        });
        socket.once('data', (data: Buffer) => {
          socket.destroy();
          resolve(data.toString('latin1', 0, 12));
        });
        socket.once('error', reject);
      });
      expect(head).toBe('HTTP/1.1 200');
      expect(largeFinished).toBe(false);
      for (let i = 0; i < 100 && !largeFinished; i++) await sleep(20);
      expect(largeFinished).toBe(true);
      await sleep(50);
      const retry = await postJson(`${gw.url}/large-slow`, { a: 1 }, 'large-1');
      expect(retry.status).toBe(410);
      expect(await retry.json()).toMatchObject({ code: 'IDEMPO_RESPONSE_NOT_KEPT', originalStatus: 200 });
      expect(hitsFor('/large-slow')).toBe(1);
    } finally {
      await gw.close();
    }
  });

  it('gives up at --upstream-deadline without releasing: the key waits out its lease, then is re-driven', async () => {
    const gw = await startGateway({
      upstream: upstream.url,
      port: 0,
      store: 'memory:',
      logger: false,
      lease: '1s',
      upstreamTimeout: '200ms',
      upstreamDeadline: '600ms',
    });
    try {
      const first = await postJson(`${gw.url}/deadline`, { a: 1 }, 'deadline-1', { 'x-delay-ms': '5000' });
      expect(first.status).toBe(504);
      await sleep(700);
      // Past the deadline the gateway stopped waiting, but the upstream may still do the work.
      const kept = await postJson(`${gw.url}/deadline`, { a: 1 }, 'deadline-1');
      expect(kept.status).toBe(409);
      expect(hitsFor('/deadline')).toBe(1);
      await sleep(1_100);
      const redriven = await postJson(`${gw.url}/deadline`, { a: 1 }, 'deadline-1');
      expect(redriven.status).toBe(201);
      const hits = upstream.hits.filter((h) => h.url === '/deadline');
      expect(hits).toHaveLength(2);
      expect(hits[1]?.headers['idempo-redrive']).toMatch(/^\d+$/);
    } finally {
      await gw.close();
    }
  });

  it('refuses an --upstream-deadline shorter than --upstream-timeout', async () => {
    await expect(
      startGateway({
        upstream: upstream.url,
        port: 0,
        store: 'memory:',
        logger: false,
        upstreamTimeout: '2s',
        upstreamDeadline: '1s',
      }),
    ).rejects.toMatchObject({ code: 'IDEMPO_CONFIG_INVALID', message: expect.stringMatching(/upstream-deadline/) });
  });

  it('never forwards a client-sent Idempo-Redrive, keyed or not', async () => {
    await postJson(`${gateway.url}/forged`, { a: 1 }, 'forged-1', { 'idempo-redrive': '999' });
    await postJson(`${gateway.url}/forged`, { a: 1 }, undefined, { 'idempo-redrive': '999' });
    const hits = upstream.hits.filter((h) => h.url === '/forged');
    expect(hits).toHaveLength(2);
    for (const hit of hits) expect(hit.headers['idempo-redrive']).toBeUndefined();
    expect(hits[0]?.headers['idempotency-key']).toBe('forged-1');
  });

  it('forwards Idempotency-Key to the upstream whatever header carries the key', async () => {
    const gw = await startGateway({
      upstream: upstream.url,
      port: 0,
      store: 'memory:',
      logger: false,
      idempotency: { header: 'x-request-key' },
    });
    try {
      const res = await postJson(`${gw.url}/custom-header`, { a: 1 }, undefined, { 'x-request-key': '"custom-1"' });
      expect(res.status).toBe(201);
      const hit = upstream.hits.find((h) => h.url === '/custom-header');
      expect(hit?.headers['idempotency-key']).toBe('custom-1');
      expect(hit?.headers['x-request-key']).toBe('"custom-1"');
    } finally {
      await gw.close();
    }
  });

  it('keeps tenants apart with --scope-header', async () => {
    await postJson(`${gateway.url}/scoped`, { a: 1 }, 'scope-1', { 'x-tenant': 'a' });
    const other = await postJson(`${gateway.url}/scoped`, { a: 1 }, 'scope-1', { 'x-tenant': 'b' });
    expect(other.headers.get('idempotent-replayed')).toBeNull();
    expect(hitsFor('/scoped')).toBe(2);
  });

  it('answers 413 to a keyed body over the limit and sends nothing upstream', async () => {
    const res = await postJson(`${gateway.url}/big`, { blob: 'x'.repeat(2000) }, 'big-1');
    expect(res.status).toBe(413);
    expect((await res.json()).code).toBe('IDEMPO_BODY_TOO_LARGE');
    expect(hitsFor('/big')).toBe(0);
  });

  it('forwards broken JSON as it came and replays the upstream answer', async () => {
    const res = await postJson(`${gateway.url}/broken`, '{"amount":', 'broken-1');
    expect(res.status).toBe(201);
    expect((await res.json()).echo).toBe('{"amount":');
    const replay = await postJson(`${gateway.url}/broken`, '{"amount":', 'broken-1');
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
  });

  it('answers /healthz itself', async () => {
    const res = await fetch(`${gateway.url}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok', store: 'ok' });
    expect(upstream.hits.some((h) => h.url === '/healthz')).toBe(false);
  });

  it('forwards X-Forwarded-* and drops hop-by-hop headers', async () => {
    await postJson(`${gateway.url}/headers`, {}, undefined, {
      'x-forwarded-for': '10.0.0.9',
      'proxy-authorization': 'secret',
    });
    const hit = upstream.hits.find((h) => h.url === '/headers');
    expect(hit?.headers['x-forwarded-for']).toBe('10.0.0.9, 127.0.0.1');
    expect(hit?.headers['proxy-authorization']).toBeUndefined();
    expect(hit?.headers['x-forwarded-host']).toMatch(/^127\.0\.0\.1:\d+$/);
  });
});

describe('gateway failures', () => {
  it('answers 502 and releases the key when the upstream cannot be reached; the retry runs once it is back', async () => {
    const port = await freePort();
    const down = await startGateway({ upstream: `http://127.0.0.1:${port}`, port: 0, store: 'memory:', logger: false });
    try {
      const res = await postJson(`${down.url}/pay`, { a: 1 }, 'unreachable-1');
      expect(res.status).toBe(502);
      expect((await res.json()).code).toBe('IDEMPO_UPSTREAM_UNREACHABLE');
      // Thrown through the adapter, it gets its Retry-After by the same route as the gateway's 504.
      expect(res.headers.get('retry-after')).toBe('1');
      const { createServer } = await import('node:http');
      let runs = 0;
      const late = createServer((_req, res2) => {
        runs++;
        res2.writeHead(201).end('ok');
      });
      await new Promise<void>((resolve) => late.listen(port, '127.0.0.1', resolve));
      const retry = await postJson(`${down.url}/pay`, { a: 1 }, 'unreachable-1');
      expect(retry.status).toBe(201);
      expect(runs).toBe(1);
      late.closeAllConnections();
      await new Promise<void>((resolve) => late.close(() => resolve()));
    } finally {
      await down.close();
    }
  });

  it.each(['info', 'warn'] as const)('logs each event as a pino line at its level (logger at %s)', async (level) => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(JSON.parse(String(chunk)));
        callback();
      },
    });
    const fail = async () => {
      throw new Error('store down');
    };
    const broken: IdempotencyStore = { claim: fail, complete: fail, release: fail, renew: fail, saveStep: fail };
    const working = await startGateway({
      upstream: upstream.url,
      port: 0,
      store: 'memory:',
      logger: pino({ level }, sink),
    });
    const failing = await startGateway({
      upstream: upstream.url,
      port: 0,
      store: broken,
      logger: pino({ level }, sink),
    });
    try {
      await postJson(`${working.url}/logged`, { a: 1 }, `log-${level}`);
      await postJson(`${working.url}/logged`, { a: 1 }, `log-${level}`);
      await postJson(`${failing.url}/logged`, { a: 1 }, `log-${level}`);
    } finally {
      await working.close();
      await failing.close();
    }
    const events = lines
      .filter((line) => String(line.msg).startsWith('idempotency '))
      .map(({ level: n, type, method, url, key, status }) => ({ level: n, type, method, url, key, status }));
    const expected = [
      { level: 30, type: 'executed', status: 201 },
      { level: 30, type: 'replayed', status: 201 },
      { level: 50, type: 'store_error', status: 503 },
    ].filter((event) => level === 'info' || event.level >= 40);
    expect(events).toEqual(
      expected.map((event) => ({ ...event, method: 'POST', url: '/logged', key: `log-${level}` })),
    );
    const storeError = lines.find((line) => line.type === 'store_error') as { err?: { message?: string } };
    expect(storeError.err?.message).toBe('store down');
  });

  it('answers 503 and sends nothing upstream when the store fails, and /healthz says the store is unreachable', async () => {
    const fail = async () => {
      throw new Error('store down');
    };
    let pings = 0;
    const broken: IdempotencyStore = {
      claim: fail,
      complete: fail,
      release: fail,
      renew: fail,
      saveStep: fail,
      ping: () => {
        pings++;
        return fail();
      },
    };
    const gw = await startGateway({ upstream: upstream.url, port: 0, store: broken, logger: false });
    try {
      const before = hitsFor('/store-down');
      const res = await postJson(`${gw.url}/store-down`, { a: 1 }, 'sd-1');
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      expect((await res.json()).code).toBe('IDEMPO_STORE_UNAVAILABLE');
      expect(hitsFor('/store-down')).toBe(before);
      const pingsBefore = pings;
      const checks = await Promise.all(Array.from({ length: 20 }, () => fetch(`${gw.url}/healthz`)));
      for (const check of checks) {
        expect(check.status).toBe(503);
        expect(await check.json()).toEqual({ status: 'unavailable', store: 'unreachable' });
      }
      // A flood of health checks costs the store at most one ping per cache period.
      expect(pings - pingsBefore).toBeLessThanOrEqual(1);
    } finally {
      await gw.close();
    }
  });

  it("with concurrent: 'wait', 50 concurrent duplicates get the original's response from one upstream call", async () => {
    const store = createMemoryStore();
    const gw = await startGateway({
      upstream: upstream.url,
      port: 0,
      store,
      logger: false,
      idempotency: { concurrent: 'wait', waitTimeout: '5s' },
    });
    try {
      const before = hitsFor('/slow?ms=200');
      const responses = await Promise.all(
        Array.from({ length: 50 }, () => postJson(`${gw.url}/slow?ms=200`, { a: 1 }, 'wait-1')),
      );
      const bodies = await Promise.all(responses.map((r) => r.text()));
      expect(hitsFor('/slow?ms=200') - before).toBe(1);
      expect(new Set(responses.map((r) => r.status))).toEqual(new Set([201]));
      expect(new Set(bodies).size).toBe(1);
    } finally {
      await gw.close();
    }
  });

  it('refuses a bad --upstream with a coded error', async () => {
    await expect(startGateway({ upstream: 'ftp://x', port: 0, store: 'memory:', logger: false })).rejects.toMatchObject(
      {
        code: 'IDEMPO_CONFIG_INVALID',
      },
    );
    await expect(
      startGateway({ upstream: 'http://127.0.0.1:1', port: 0, store: 'mongo://x', logger: false }),
    ).rejects.toThrow(/unsupported store URL/);
  });
});

describe('gateway protocol with gateway processes', () => {
  it('an owner stalled past its lease after the upstream answered: its client gets a broken response or 409, never a clean 201', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'idempo-lease-lost-'));
    const args = [
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      `sqlite:${join(dir, 'shared.db')}`,
      '--lease',
      '1s',
    ];
    const first = await spawnGateway(args);
    const second = await spawnGateway(args);
    let openGate: () => void = () => {};
    stallGate = new Promise((resolve) => {
      openGate = resolve;
    });
    const answered = new Promise<void>((resolve) => {
      stallAnswered = resolve;
    });
    try {
      const stalled = postJson(`${first.url}/stall`, { a: 1 }, 'stall-1').then(
        async (res) => {
          const text = await res.text().then(
            (body) => body,
            () => undefined,
          );
          if (text === undefined) return 'broken';
          return `${res.status}:${res.status === 201 ? 'clean' : JSON.parse(text).code}`;
        },
        () => 'broken',
      );
      await answered;
      first.child.kill('SIGSTOP');
      let taken: string;
      try {
        await sleep(1_600);
        const takeover = await postJson(`${second.url}/stall`, { a: 1 }, 'stall-1');
        expect(takeover.status).toBe(201);
        taken = await takeover.text();
        expect(JSON.parse(taken).owner).toBe('second');
        expect(JSON.parse(taken).redrive).toMatch(/^\d+$/);
      } finally {
        openGate();
        first.child.kill('SIGCONT');
      }
      expect(['broken', '409:IDEMPO_LEASE_LOST']).toContain(await stalled);
      // One key, one answer: both gateways replay the newer owner's.
      for (const gateway of [first, second]) {
        const replay = await postJson(`${gateway.url}/stall`, { a: 1 }, 'stall-1');
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(await replay.text()).toBe(taken);
      }
      expect(hitsFor('/stall')).toBe(2);
    } finally {
      first.child.kill('SIGCONT');
      first.child.kill('SIGTERM');
      second.child.kill('SIGTERM');
      await Promise.all([first.exited, second.exited]);
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
