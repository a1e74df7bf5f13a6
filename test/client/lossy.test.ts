/**
 * End to end over loopback: the idempo client, the lossy proxy, the real gateway and the example
 * payments API. The proxy drops a seeded share of responses after the gateway and the API have
 * done the work; the client retries with the same key and the gateway replays. Exactly one
 * execution per operation, whatever the network lost.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type LossyProxy, seededRandom, startLossyProxy } from '../../examples/client/lossy-proxy.js';
import { createIdempotentFetch, type IdempotentFetch } from '../../src/client/index.js';
import { type Gateway, startGateway } from '../../src/gateway/index.js';

interface PaymentsApi {
  readonly url: string;
  close(): Promise<void>;
  stats(): { payments: number; amountCents: number };
}
// The example API is plain JS without types; a computed specifier keeps tsc from resolving it.
const paymentsApiModule = new URL('../../examples/payments-api.js', import.meta.url).href;
const { startPaymentsApi } = (await import(paymentsApiModule)) as { startPaymentsApi(): Promise<PaymentsApi> };

interface Chain {
  readonly api: PaymentsApi;
  readonly gateway: Gateway;
  readonly proxy: LossyProxy;
}

const open: Chain[] = [];

afterEach(async () => {
  for (const { proxy, gateway, api } of open.splice(0)) {
    await proxy.close();
    await gateway.close();
    await api.close();
  }
});

async function chain(loss: { dropRate: number; dropRequestRate?: number; seed: number }): Promise<Chain> {
  const api = await startPaymentsApi();
  const gateway = await startGateway({ upstream: api.url, port: 0, store: 'memory:', logger: false });
  const proxy = await startLossyProxy({ target: gateway.url, ...loss });
  const started = { api, gateway, proxy };
  open.push(started);
  return started;
}

const amountOf = (i: number): number => 100 + i;
const sumOf = (n: number): number => Array.from({ length: n }, (_, i) => amountOf(i)).reduce((a, b) => a + b, 0);

/** Sends payments 0..n-1, `concurrency` at a time; returns each call's status or 'error'. */
async function pay(
  send: (url: string, init: RequestInit) => Promise<Response>,
  url: string,
  n: number,
  concurrency = 1,
) {
  const results: (number | 'error')[] = [];
  let next = 0;
  async function worker(): Promise<void> {
    while (next < n) {
      const i = next++;
      try {
        const response = await send(`${url}/payments`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ amount: amountOf(i), currency: 'eur' }),
        });
        await response.arrayBuffer();
        results[i] = response.status;
      } catch {
        results[i] = 'error';
      }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

const idempotentFetch: IdempotentFetch = createIdempotentFetch({ retry: { limit: 8, delay: () => 2 } });

describe('N operations through a lossy network', () => {
  it('run exactly N times with the idempo client, one after another', async () => {
    const n = 60;
    const { api, proxy } = await chain({ dropRate: 0.3, seed: 11 });
    const results = await pay(idempotentFetch, proxy.url, n);

    expect(results).toEqual(Array(n).fill(201));
    expect(proxy.stats().droppedResponses).toBeGreaterThan(5);
    expect(api.stats()).toMatchObject({ payments: n, amountCents: sumOf(n) });
  });

  it('run exactly N times with the idempo client, eight at a time', async () => {
    const n = 80;
    const { api, proxy } = await chain({ dropRate: 0.3, seed: 12 });
    const results = await pay(idempotentFetch, proxy.url, n, 8);

    expect(results).toEqual(Array(n).fill(201));
    expect(proxy.stats().droppedResponses).toBeGreaterThan(5);
    expect(api.stats()).toMatchObject({ payments: n, amountCents: sumOf(n) });
  });

  it('run exactly N times when requests are lost on the way in as well', async () => {
    const n = 60;
    const { api, proxy } = await chain({ dropRate: 0.2, dropRequestRate: 0.2, seed: 13 });
    const results = await pay(idempotentFetch, proxy.url, n);

    expect(results).toEqual(Array(n).fill(201));
    expect(proxy.stats().droppedRequests).toBeGreaterThan(3);
    expect(api.stats()).toMatchObject({ payments: n, amountCents: sumOf(n) });
  });

  it('run more than N times with plain fetch and naive retries (the control)', async () => {
    const n = 60;
    const { api, proxy } = await chain({ dropRate: 0.3, seed: 11 });
    const naive = async (url: string, init: RequestInit): Promise<Response> => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await fetch(url, init);
        } catch (error) {
          if (attempt >= 8) throw error;
        }
      }
    };
    await pay(naive, proxy.url, n);

    const dropped = proxy.stats().droppedResponses;
    expect(dropped).toBeGreaterThan(5);
    expect(api.stats().payments).toBe(n + dropped);
  });
});

describe('the lossy proxy', () => {
  it('draws the same sequence for the same seed, and a different one for another', () => {
    const draw = (seed: number) => Array.from({ length: 20 }, seededRandom(seed));
    expect(draw(5)).toEqual(draw(5));
    expect(draw(5)).not.toEqual(draw(6));
    expect(draw(5).every((x) => x >= 0 && x < 1)).toBe(true);
  });

  it('drops close to the share it is set to', () => {
    const random = seededRandom(1);
    const drops = Array.from({ length: 10_000 }, random).filter((x) => x < 0.3).length;
    expect(drops).toBeGreaterThan(2_700);
    expect(drops).toBeLessThan(3_300);
  });

  it('drops the same requests on every run with one seed', async () => {
    const runs: string[] = [];
    for (let run = 0; run < 2; run++) {
      const { proxy } = await chain({ dropRate: 0.4, seed: 99 });
      const results = await pay((url, init) => fetch(url, init), proxy.url, 20);
      runs.push(results.map((r) => (r === 'error' ? 'x' : '.')).join(''));
      expect(results.filter((r) => r === 'error').length).toBe(proxy.stats().droppedResponses);
    }
    expect(runs[0]).toContain('x');
    expect(runs[0]).toBe(runs[1]);
  });
});
