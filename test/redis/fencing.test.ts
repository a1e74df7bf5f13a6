/**
 * Fencing across processes: an owner frozen with SIGSTOP past its lease loses the key to a new
 * owner; once thawed (SIGCONT), its late completion is refused, and retries replay the new
 * owner's response. What the late caller gets depends on what had gone out when it froze: a
 * `409 IDEMPO_LEASE_LOST` while nothing had, a broken response once its head was on the wire;
 * never a clean success of its own.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotency } from '../../src/index.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { type AppChild, type AppConfig, startApp } from './child.js';

const REDIS = { host: '127.0.0.1', port: 6379 };
const LEASE_MS = 1_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe('an owner stopped past its lease (SIGSTOP)', () => {
  const prefix = `idempo-fence:${randomUUID()}:`;
  let client: Redis;
  let app: AppChild | undefined;

  beforeAll(async () => {
    client = new Redis(REDIS);
  });

  afterEach(async () => {
    await app?.kill();
    app = undefined;
  });

  afterAll(async () => {
    const keys = await client.keys(`${prefix}*`);
    if (keys.length) await client.unlink(...keys);
    await client.quit();
  });

  /**
   * Starts A with `respond`, sends the first request, waits until A is inside its handler (and,
   * for `head-first`, until A's client has the head), freezes A past its lease, and lets B (an
   * in-process app instance on the same Redis) take the key over and complete it.
   */
  async function takenOver(respond: NonNullable<AppConfig['respond']>) {
    app = startApp('serve', { redis: REDIS, prefix, name: 'A', lease: LEASE_MS, block: true, respond });
    const child = app;
    const { port } = (await child.waitFor((m) => m.type === 'listening')) as unknown as { port: number };
    const key = `pay-${randomUUID()}`;
    const body = JSON.stringify({ amount: 1_000, currency: 'eur' });
    const send = () =>
      fetch(`http://127.0.0.1:${port}/payments`, {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body,
      });

    // A claims the key, saves its charge step, and is frozen inside the handler.
    const first = send();
    const started = await child.waitFor((m) => m.type === 'started');
    const chargeOfA = (started.charge as { id: string }).id;
    if (respond === 'head-first') await child.waitFor((m) => m.type === 'head');
    // Settles with the head, or never while A is frozen (nothing was sent): caught so it is not unhandled.
    const firstSettled = first.then(
      (response) => ({ response }),
      (error: unknown) => ({ error }),
    );
    if (respond === 'head-first') {
      // The head is on the wire before A freezes: its client holds a 201 status line.
      const head = await firstSettled;
      expect('response' in head && head.response.status).toBe(201);
    }
    child.process.kill('SIGSTOP');
    await sleep(LEASE_MS + 600); // A's lease (last renewed at most 1/3 of it before the stop) has passed

    // B, another app instance, takes the key over: recovered, with A's step result.
    const store = createRedisStore({ client, prefix });
    const idem = createIdempotency({ store, lease: LEASE_MS, ttl: '60s' });
    let chargesRunByB = 0;
    const request = () =>
      new Request('http://api.test/payments', {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body,
      });
    const taken = await idem.handle(request(), async (_req, ctx) => {
      const charge = await ctx.step('charge', () => {
        chargesRunByB++;
        return { id: 'ch_B' };
      });
      return Response.json({ owner: 'B', charge, recovered: ctx.recovered }, { status: 201 });
    });
    expect(taken.status).toBe(201);
    const bodyOfB = await taken.text();
    expect(JSON.parse(bodyOfB)).toEqual({ owner: 'B', charge: { id: chargeOfA }, recovered: true });
    expect(chargesRunByB).toBe(0);

    // A thaws and finishes: its renewal and its completion are refused under the old token.
    const eventsFrom = child.messages.length;
    child.process.kill('SIGCONT');
    child.go();
    return { child, key, send, firstSettled, bodyOfB, idem, request, store, eventsFrom };
  }

  /** A's late completion was refused, not stored; retries through A and through B replay B's response. */
  async function expectRetriesReplayB(taken: Awaited<ReturnType<typeof takenOver>>) {
    const { child, eventsFrom, send, bodyOfB, idem, request, store } = taken;
    await child.waitFor(
      (m) => m.type === 'event' && (m.event as { type: string }).type === 'lease_lost',
      5_000,
      eventsFrom,
    );
    expect(
      child.messages
        .slice(eventsFrom)
        .some((m) => m.type === 'event' && (m.event as { type: string }).type === 'executed'),
    ).toBe(false);
    for (let i = 0; i < 2; i++) {
      const viaA = await send();
      expect(viaA.status).toBe(201);
      expect(viaA.headers.get('idempotent-replayed')).toBe('true');
      expect(await viaA.text()).toBe(bodyOfB);
      const viaB = await idem.handle(request(), () => {
        throw new Error('a replay must not run the handler');
      });
      expect(viaB.status).toBe(201);
      expect(viaB.headers.get('idempotent-replayed')).toBe('true');
      expect(await viaB.text()).toBe(bodyOfB);
    }
    // A started the handler once; nothing in A ran it again for the retries.
    expect(child.messages.filter((m) => m.type === 'started')).toHaveLength(1);
    await store.close?.();
  }

  it('answers its late caller 409 IDEMPO_LEASE_LOST when nothing had been sent; retries replay the new owner', async () => {
    const taken = await takenOver('status');
    const late = await taken.firstSettled;
    if (!('response' in late)) throw new Error(`the late caller's request failed: ${String(late.error)}`);
    expect(late.response.status).toBe(409);
    expect(late.response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
    expect(late.response.headers.get('idempotent-replayed')).toBeNull();
    expect(Number(late.response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const problem = (await late.response.json()) as { code: string; status: number };
    expect(problem).toMatchObject({ code: 'IDEMPO_LEASE_LOST', status: 409 });
    await expectRetriesReplayB(taken);
  });

  it('breaks its late caller’s response when the head had gone out; retries replay the new owner', async () => {
    const taken = await takenOver('head-first');
    const late = await taken.firstSettled;
    if (!('response' in late)) throw new Error(`the head never reached the client: ${String(late.error)}`);
    expect(late.response.status).toBe(201);
    // The body never ends cleanly: the connection is cut, so the client sees a failure it retries.
    const read = late.response.text().then(
      (text) => ({ text }),
      (error: unknown) => ({ error }),
    );
    const outcome = await read;
    expect(outcome).toHaveProperty('error');
    expect(outcome).not.toHaveProperty('text');
    await expectRetriesReplayB(taken);
  });
});
