import { randomUUID } from 'node:crypto';
import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { storeContractCases } from '../../src/stores/contract.js';
import { createRedisStore } from '../../src/stores/redis.js';
import type { IdempotencyStore } from '../../src/vocabulary/index.js';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';
import { claimOverTwoTicks, countSocketWrites } from '../helpers/socket-writes.js';

const DAY = 86_400_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function connect(cluster: RedisCluster): Promise<Cluster> {
  const client = new Cluster(cluster.nodes, { lazyConnect: true });
  await client.connect();
  return client;
}

describe('redis store on a three-master Redis Cluster', () => {
  const prefix = `idempo-test:${randomUUID()}:`;
  let cluster: RedisCluster;
  let clientA: Cluster;
  let clientB: Cluster;
  let storeA: IdempotencyStore;
  let storeB: IdempotencyStore;

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    clientA = await connect(cluster);
    clientB = await connect(cluster);
    storeA = createRedisStore({ client: clientA, prefix });
    storeB = createRedisStore({ client: clientB, prefix });
  });

  afterAll(async () => {
    await storeA?.close?.();
    await storeB?.close?.();
    await clientA?.quit();
    await clientB?.quit();
    await cluster?.stop();
  });

  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => storeA, otherStore: () => storeB }));

  it('spreads records over all three masters, each record’s keys in one slot', async () => {
    const owners = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const key = `spread:${i}:${randomUUID()}`;
      const claimed = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      if (claimed.status !== 'acquired') throw new Error(claimed.status);
      expect(await storeA.saveStep(key, claimed.token, 's', '1')).toBe('ok');
      const record = `${prefix}{${key}}`;
      const slot = await clientA.cluster('KEYSLOT', record);
      expect(await clientA.cluster('KEYSLOT', `${record}:steps`)).toBe(slot);
      const range = (await clientA.cluster('SLOTS')).find(([from, to]) => slot >= from && slot <= to)!;
      owners.add(String(range[2]![1]));
    }
    expect(owners.size).toBe(3);
  });

  it('sends the commands one turn of the event loop issues to a node in one socket write per node', async () => {
    const client = await connect(cluster);
    const store = createRedisStore({ client, prefix });
    try {
      await Promise.all(client.nodes('master').map((node) => node.ping())); // every node connected, sockets idle
      const counted = countSocketWrites(client.nodes('all'));
      const results = await claimOverTwoTicks(store, 15);
      expect(results.map((r) => r.status)).toEqual(Array(30).fill('acquired'));
      // 30 keys over three masters: uncorked, 30 writes.
      expect(counted.writes).toBeLessThanOrEqual(3);
    } finally {
      await store.close?.();
      await client.quit();
    }
  });

  it('wakes a waiter on another node’s completion through plain PUBLISH', async () => {
    // The subscriber listens on one node; PUBLISH in a Cluster reaches every node, so keys on
    // any master wake it. Several keys make it likely that some live elsewhere.
    for (let i = 0; i < 5; i++) {
      const key = `wait:${i}:${randomUUID()}`;
      const claimed = await storeB.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      if (claimed.status !== 'acquired') throw new Error(claimed.status);
      const started = Date.now();
      const waiting = storeA.waitForChange!(key, 5_000);
      await sleep(100);
      expect(await storeB.complete(key, claimed.token, { status: 200, headers: [], body: new Uint8Array() }, DAY)).toBe(
        'ok',
      );
      await waiting;
      expect(Date.now() - started).toBeLessThan(2_000);
    }
  });
});
