import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../../src/client/index.js';
import { postJson, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// "Never twice" through `idempo serve` as users run it: a gateway process, real sockets, an
// upstream that really is slow, really resets, and a client that really hangs up.
let upstream: Awaited<ReturnType<typeof startUpstream>>;
interface PaymentsApi {
  url: string;
  close(): Promise<void>;
  stats(): { payments: number; amountCents: number; signups: number };
}
// The example is plain JavaScript without types: loaded by URL, typed here for what the test uses.
const paymentsApiModule = new URL('../../examples/payments-api.js', import.meta.url).href;
const { startPaymentsApi } = (await import(paymentsApiModule)) as {
  startPaymentsApi(options: { delayMs: number }): Promise<PaymentsApi>;
};
const dir = mkdtempSync(join(tmpdir(), 'idempo-never-twice-'));

beforeAll(async () => {
  upstream = await startUpstream(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/reset') {
      // The upstream read the request (and may have acted on it), then the connection dies.
      req.socket.destroy();
      return;
    }
    // The delay comes from the query, or from a header, which the fingerprint leaves out.
    await sleep(Number(url.searchParams.get('ms') ?? req.headers['x-delay-ms'] ?? 0));
    res.writeHead(201, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ n: upstream.hits.length, path: url.pathname }));
  });
});

afterAll(async () => {
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

const hitsFor = (path: string) => upstream.hits.filter((h) => new URL(h.url, 'http://x').pathname === path);

async function gatewayOn(store: string, ...flags: string[]) {
  return spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', store, ...flags]);
}

async function stop(gateway: Awaited<ReturnType<typeof spawnGateway>>) {
  gateway.child.kill('SIGTERM');
  await gateway.exited;
}

/** Sends a keyed POST over a raw socket and closes it, without reading, once `reached()` holds. */
function postAndHangUp(url: string, path: string, key: string, reached: () => boolean): Promise<void> {
  const { hostname, port } = new URL(url);
  const body = '{"amount":1}';
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => {
      socket.write(
        `POST ${path} HTTP/1.1\r\nhost: ${hostname}\r\ncontent-type: application/json\r\nidempotency-key: ${key}\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
      );
      const poll = setInterval(() => {
        if (!reached()) return;
        clearInterval(poll);
        socket.destroy();
        resolve();
      }, 10);
    });
    socket.on('data', () => reject(new Error('the gateway answered before the client hung up')));
    socket.on('error', reject);
  });
}

describe('never twice through idempo serve', () => {
  it('a slow upstream behind --upstream-timeout runs once for a retrying client, which gets the stored 201', async () => {
    const gateway = await gatewayOn('memory:', '--upstream-timeout', '1s');
    try {
      const statuses: number[] = [];
      const idempotentFetch = createIdempotentFetch({
        retry: { limit: 4 },
        onFailedAttempt: (context) => {
          if (context.response) statuses.push(context.response.status);
        },
      });
      const res = await idempotentFetch(`${gateway.url}/slow-pay?ms=1500`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ amount: 1500 }),
      });
      expect(res.status).toBe(201);
      expect(res.headers.get('idempotent-replayed')).toBe('true');
      expect((await res.json()).path).toBe('/slow-pay');
      expect(statuses[0]).toBe(504);
      expect(hitsFor('/slow-pay')).toHaveLength(1);
    } finally {
      await stop(gateway);
    }
  });

  it('a client that hangs up mid-request: the upstream runs once and the retry replays its answer', async () => {
    const gateway = await gatewayOn('memory:');
    try {
      // The client hangs up once the upstream has its request, 600 ms before the answer.
      await postAndHangUp(gateway.url, '/hang-up?ms=600', 'hang-up-1', () => hitsFor('/hang-up').length > 0);
      // While the upstream still works, the key is in flight, not released.
      const meanwhile = await postJson(`${gateway.url}/hang-up?ms=600`, { amount: 1 }, 'hang-up-1');
      expect(meanwhile.status).toBe(409);
      let retry = meanwhile;
      for (let i = 0; i < 40 && retry.status === 409; i++) {
        await sleep(100);
        retry = await postJson(`${gateway.url}/hang-up?ms=600`, { amount: 1 }, 'hang-up-1');
      }
      expect(retry.status).toBe(201);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(hitsFor('/hang-up')).toHaveLength(1);
    } finally {
      await stop(gateway);
    }
  });

  it('an upstream that resets after reading the request keeps the key until its lease, then gets a marked re-drive', async () => {
    const gateway = await gatewayOn('memory:', '--lease', '1s');
    try {
      const first = await postJson(`${gateway.url}/reset`, { amount: 1 }, 'reset-1');
      expect(first.status).toBe(502);
      expect(first.headers.get('retry-after')).toBe('1');
      expect((await first.json()).code).toBe('IDEMPO_UPSTREAM_FAILED');
      const meanwhile = await postJson(`${gateway.url}/reset`, { amount: 1 }, 'reset-1');
      expect(meanwhile.status).toBe(409);
      expect(hitsFor('/reset')).toHaveLength(1);
      await sleep(1_200);
      const redrive = await postJson(`${gateway.url}/reset`, { amount: 1 }, 'reset-1');
      expect(redrive.status).toBe(502);
      const hits = hitsFor('/reset');
      expect(hits).toHaveLength(2);
      expect(hits[0]?.headers['idempo-redrive']).toBeUndefined();
      expect(hits[1]?.headers['idempo-redrive']).toMatch(/^\d+$/);
      expect(hits[1]?.headers['idempotency-key']).toBe('reset-1');
      const recovered = gateway.logs.map((line) => JSON.parse(line)).find((entry) => entry.type === 'recovered');
      expect(recovered?.key).toBe('reset-1');
    } finally {
      await stop(gateway);
    }
  });

  it('drains at SIGTERM: a request answered 504 early still completes upstream and is stored; /healthz says draining', async () => {
    const store = `sqlite:${join(dir, 'drain.db')}`;
    const gateway = await gatewayOn(store, '--upstream-timeout', '200ms');
    const early = await postJson(`${gateway.url}/drain-slow?ms=1200`, { amount: 1 }, 'drain-1');
    expect(early.status).toBe(504);
    gateway.child.kill('SIGTERM');
    await sleep(100);
    const health = await fetch(`${gateway.url}/healthz`);
    expect(health.status).toBe(503);
    expect((await health.json()).status).toBe('draining');
    const refused = await postJson(`${gateway.url}/other`, { amount: 1 }, 'drain-other');
    expect(refused.status).toBe(503);
    expect((await refused.json()).code).toBe('IDEMPO_GATEWAY_DRAINING');
    expect(await gateway.exited).toEqual({ code: 0, signal: null });
    expect(hitsFor('/other')).toHaveLength(0);

    const next = await gatewayOn(store);
    try {
      const replay = await postJson(`${next.url}/drain-slow?ms=1200`, { amount: 1 }, 'drain-1');
      expect(replay.status).toBe(201);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(hitsFor('/drain-slow')).toHaveLength(1);
    } finally {
      await stop(next);
    }
  });

  it('a drain that runs past --drain-timeout hands its key over in flight, never released', async () => {
    const store = `sqlite:${join(dir, 'handover.db')}`;
    const gateway = await gatewayOn(store, '--drain-timeout', '300ms', '--lease', '4s');
    const pending = postJson(`${gateway.url}/handover`, { amount: 1 }, 'handover-1', { 'x-delay-ms': '8000' }).catch(
      (error: unknown) => error,
    );
    for (let i = 0; i < 100 && hitsFor('/handover').length === 0; i++) await sleep(20);
    expect(hitsFor('/handover')).toHaveLength(1);
    gateway.child.kill('SIGTERM');
    expect(await gateway.exited).toEqual({ code: 0, signal: null });
    await pending;
    expect(gateway.logs.some((line) => line.includes('drain timed out'))).toBe(true);

    const next = await gatewayOn(store, '--lease', '4s');
    try {
      // Released, this would run again at once: kept, it is in flight until the lease passes.
      const statuses: number[] = [];
      let res = await postJson(`${next.url}/handover`, { amount: 1 }, 'handover-1');
      for (let i = 0; i < 40 && res.status === 409; i++) {
        statuses.push(res.status);
        await sleep(250);
        res = await postJson(`${next.url}/handover`, { amount: 1 }, 'handover-1');
      }
      expect(statuses[0]).toBe(409);
      expect(res.status).toBe(201);
      const hits = hitsFor('/handover');
      expect(hits).toHaveLength(2);
      expect(hits[1]?.headers['idempo-redrive']).toMatch(/^\d+$/);
    } finally {
      await stop(next);
    }
  });

  it('the example API answers a re-drive of a payment it already made instead of charging again', async () => {
    const api = await startPaymentsApi({ delayMs: 600 });
    const store = `sqlite:${join(dir, 'redrive.db')}`;
    const args = ['--upstream', api.url, '--port', '0', '--store', store, '--lease', '1s'];
    const first = await spawnGateway(args);
    try {
      const lost = postJson(`${first.url}/payments`, { amount: 700 }, 'redrive-pay').catch((error: unknown) => error);
      await sleep(200);
      // The gateway dies while the API charges: no proxy can know whether the charge happened.
      first.child.kill('SIGKILL');
      expect(await lost).toBeInstanceOf(Error);
      await sleep(600);
      expect(api.stats().payments).toBe(1);

      const second = await spawnGateway(args);
      try {
        await sleep(600);
        const redriven = await postJson(`${second.url}/payments`, { amount: 700 }, 'redrive-pay');
        expect(redriven.status).toBe(201);
        const payment = await redriven.json();
        expect(api.stats()).toMatchObject({ payments: 1, amountCents: 700 });
        const replay = await postJson(`${second.url}/payments`, { amount: 700 }, 'redrive-pay');
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect((await replay.json()).id).toBe(payment.id);
      } finally {
        await stop(second);
      }
    } finally {
      await api.close();
    }
  });
});
