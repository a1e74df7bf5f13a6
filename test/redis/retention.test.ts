/**
 * Retention through the engine on Redis: completed records disappear after `ttl`; a record whose
 * owner process crashed is held until its lease passes, then taken over with the crashed owner's
 * steps, and is removed entirely by Redis once lease + ttl pass untouched.
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotency, type IdempotencyContext } from '../../src/index.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { startApp } from './child.js';

const REDIS = { host: '127.0.0.1', port: 6379 };

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function order(key: string, body: unknown): Request {
  return new Request('http://api.test/orders', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

describe('retention on Redis, through the engine', () => {
  const prefix = `idempo-retention:${randomUUID()}:`;
  let client: Redis;

  async function storedKeys(under = prefix): Promise<string[]> {
    return client.keys(`${under}*`);
  }

  beforeAll(() => {
    client = new Redis(REDIS);
  });

  afterAll(async () => {
    const keys = await storedKeys();
    if (keys.length) await client.unlink(...keys);
    await client.quit();
  });

  it('replays a completed response until ttl, then forgets it: the key runs anew, even for another request', async () => {
    const under = `${prefix}ttl:`;
    const idem = createIdempotency({ store: createRedisStore({ client, prefix: under }), lease: '500ms', ttl: '1s' });
    const key = `order-${randomUUID()}`;
    let runs = 0;
    const handler = async () => Response.json({ run: ++runs }, { status: 201 });
    expect((await idem.handle(order(key, { n: 1 }), handler)).status).toBe(201);
    const replay = await idem.handle(order(key, { n: 1 }), handler);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect((await idem.handle(order(key, { n: 2 }), handler)).status).toBe(422);
    const [record] = await storedKeys(under);
    expect(await client.pttl(record!)).toBeLessThanOrEqual(1_000);
    await sleep(1_300);
    expect(await storedKeys(under)).toEqual([]);
    const fresh = await idem.handle(order(key, { n: 2 }), handler);
    expect(fresh.status).toBe(201);
    expect(await fresh.json()).toEqual({ run: 2 });
  });

  it('holds a crashed owner’s key until its lease passes, hands it over with its steps, and drops it after lease + ttl', async () => {
    const under = `${prefix}crash:`;
    const app = startApp('serve', { redis: REDIS, prefix: under, name: 'A', lease: 600, ttl: 600, block: true });
    try {
      const { port } = (await app.waitFor((m) => m.type === 'listening')) as unknown as { port: number };
      const recoverKey = `order-${randomUUID()}`;
      const abandonKey = `order-${randomUUID()}`;
      for (const key of [recoverKey, abandonKey]) {
        fetch(`http://127.0.0.1:${port}/orders`, {
          method: 'POST',
          headers: { 'idempotency-key': key, 'content-type': 'application/json' },
          body: JSON.stringify({ n: 1 }),
        }).catch(() => {}); // the process dies before it answers
      }
      const started = await Promise.all(
        [recoverKey, abandonKey].map((key) => app.waitFor((m) => m.type === 'started' && m.key === key)),
      );
      await app.kill(); // a crash: no release, no completion
      const crashedAt = Date.now();
      expect(await storedKeys(under)).toHaveLength(4); // two records, each with its steps

      const idem = createIdempotency({
        store: createRedisStore({ client, prefix: under }),
        lease: '600ms',
        ttl: '600ms',
      });
      let charges = 0;
      const handler = async (_req: Request, ctx: IdempotencyContext) => {
        const charge = await ctx.step('charge', () => {
          charges++;
          return { id: 'ch_new' };
        });
        return Response.json({ charge, recovered: ctx.recovered }, { status: 201 });
      };
      const held = await idem.handle(order(recoverKey, { n: 1 }), handler);
      expect(held.status).toBe(409);
      expect(Number(held.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);

      await sleep(700 - (Date.now() - crashedAt));
      const taken = await idem.handle(order(recoverKey, { n: 1 }), handler);
      expect(taken.status).toBe(201);
      expect(await taken.json()).toEqual({ charge: started[0]!.charge, recovered: true });
      expect(charges).toBe(0);
      const recovered = `${under}{${started[0]!.storeKey}}`;
      expect(await client.exists(recovered, `${recovered}:steps`)).toBe(1); // completion drops the steps

      const abandoned = `${under}{${started[1]!.storeKey}}`;
      expect(await client.exists(abandoned, `${abandoned}:steps`)).toBe(2);
      await sleep(1_400 - (Date.now() - crashedAt)); // past lease + ttl of the untouched record
      expect(await client.exists(abandoned, `${abandoned}:steps`)).toBe(0);
    } finally {
      await app.kill();
    }
  });
});
