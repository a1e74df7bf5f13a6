/**
 * Fencing across processes: an owner frozen with SIGSTOP past its lease loses the key to a new
 * owner; once thawed (SIGCONT), its late completion is refused, and retries replay the new
 * owner's response.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotency } from '../../src/index.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { type AppChild, startApp } from './child.js';

const REDIS = { host: '127.0.0.1', port: 6379 };

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

  afterAll(async () => {
    await app?.kill();
    const keys = await client.keys(`${prefix}*`);
    if (keys.length) await client.unlink(...keys);
    await client.quit();
  });

  it('loses the key to a new owner, its late completion is refused, and retries replay the new owner’s response', async () => {
    app = startApp('serve', { redis: REDIS, prefix, name: 'A', lease: 1_000, block: true });
    const { port } = (await app.waitFor((m) => m.type === 'listening')) as unknown as { port: number };
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
    const started = await app.waitFor((m) => m.type === 'started');
    const chargeOfA = (started.charge as { id: string }).id;
    app.process.kill('SIGSTOP');
    await sleep(1_600); // A's lease (1 s, last renewed at most 1/3 s before the stop) has passed

    // B, another app instance, takes the key over: recovered, with A's step result.
    const store = createRedisStore({ client, prefix });
    const idem = createIdempotency({ store, lease: 1_000, ttl: '60s' });
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
    const eventsFrom = app.messages.length;
    app.process.kill('SIGCONT');
    app.go();
    const late = await first;
    await late.text();
    await app.waitFor(
      (m) => m.type === 'event' && (m.event as { type: string }).type === 'lease_lost',
      5_000,
      eventsFrom,
    );
    expect(
      app.messages
        .slice(eventsFrom)
        .some((m) => m.type === 'event' && (m.event as { type: string }).type === 'executed'),
    ).toBe(false);

    // Retries, through A's HTTP server and through B, replay B's response byte for byte.
    const viaA = await send();
    expect(viaA.status).toBe(201);
    expect(viaA.headers.get('idempotent-replayed')).toBe('true');
    expect(await viaA.text()).toBe(bodyOfB);
    const viaB = await idem.handle(request(), () => {
      throw new Error('a replay must not run the handler');
    });
    expect(viaB.headers.get('idempotent-replayed')).toBe('true');
    expect(await viaB.text()).toBe(bodyOfB);
    await store.close?.();
  });
});
