// replicaAck on a real Redis Cluster of 3 masters, each with one replica. A stalled replica is a
// replica process under SIGSTOP: its master's WAIT then counts 0, as it would for a replica cut
// off or lagging behind.
import { randomUUID } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotency } from '../../src/engine/engine.js';
import { storeContractCases } from '../../src/stores/contract.js';
import { createRedisStore } from '../../src/stores/redis.js';
import {
  type IdempotencyStore,
  IdempotencyStoreUnavailableError,
  type StoredResponse,
} from '../../src/vocabulary/index.js';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';

const DAY = 86_400_000;
const ACK = { replicas: 1, timeout: '100ms' } as const;
const CONTRACT_ACK = { replicas: 1, timeout: '2s' } as const;

function response(text: string): StoredResponse {
  return { status: 200, headers: [['content-type', 'text/plain']], body: new TextEncoder().encode(text) };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function connect(cluster: RedisCluster): Promise<Cluster> {
  const client = new Cluster(cluster.nodes, { lazyConnect: true });
  await client.connect();
  return client;
}

describe('redis store with replicaAck on a Redis Cluster of 3 masters + 3 replicas', () => {
  const prefix = `idempo-test:${randomUUID()}:`;
  let cluster: RedisCluster;
  let clientA: Cluster;
  let clientB: Cluster;
  let storeA: IdempotencyStore;
  let storeB: IdempotencyStore;
  let contractA: IdempotencyStore | undefined;
  let contractB: IdempotencyStore | undefined;
  let paused: number[] = [];

  /** Ports of the masters, and of each master's replica. */
  async function shards(): Promise<{ master: number; replica: number }[]> {
    const nodes = await cluster.topology();
    return nodes
      .filter((n) => n.role === 'master')
      .map((m) => ({
        master: m.port,
        replica: nodes.find((n) => n.role === 'replica' && n.masterPort === m.port)!.port,
      }));
  }

  function stall(port: number): void {
    cluster.server(port).pause();
    paused.push(port);
  }

  /** The master port serving the record of `key`. */
  async function masterOf(client: Cluster, key: string): Promise<number> {
    const slot = await client.cluster('KEYSLOT', `${prefix}{${key}}`);
    const range = (await client.cluster('SLOTS')).find(([from, to]) => slot >= from && slot <= to)!;
    return Number(range[2]![1]);
  }

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 1 });
    clientA = await connect(cluster);
    clientB = await connect(cluster);
    storeA = createRedisStore({ client: clientA, prefix, replicaAck: ACK });
    storeB = createRedisStore({ client: clientB, prefix, replicaAck: ACK });
    // A replica whose link is up may not yet be counted by its master's WAIT (its first
    // acknowledgement comes a moment later), and the first contract case would then be refused:
    // wait until every master sees its replica acknowledge.
    for (const { master } of await shards()) {
      const node = new Redis({ host: '127.0.0.1', port: master, lazyConnect: true });
      await node.connect();
      try {
        const giveUpAt = Date.now() + 20_000;
        while (Number(await node.call('WAIT', '1', '200')) < 1) {
          if (Date.now() > giveUpAt) throw new Error(`the replica of master ${master} never acknowledged`);
        }
      } finally {
        node.disconnect();
      }
    }
    // And through the store itself, on every shard: its first claims are the ones CI saw refused.
    const warmed = new Set<number>();
    for (let i = 0; warmed.size < 3 && i < 200; i++) {
      const key = `warm-up-${i}`;
      const master = await masterOf(clientA, key);
      if (warmed.has(master)) continue;
      const giveUpAt = Date.now() + 20_000;
      for (;;) {
        try {
          await storeA.claim({ key, fingerprint: 'warm-up', leaseMs: 1_000, ttlMs: 1_000 });
          break;
        } catch (error) {
          if (!(error instanceof IdempotencyStoreUnavailableError) || Date.now() > giveUpAt) throw error;
          await sleep(100);
        }
      }
      warmed.add(master);
    }
  }, 60_000);

  afterEach(() => {
    for (const port of paused) cluster.server(port).resume();
    paused = [];
  });

  afterAll(async () => {
    await storeA?.close?.();
    await storeB?.close?.();
    await contractA?.close?.();
    await contractB?.close?.();
    await clientA?.quit();
    await clientB?.quit();
    await cluster?.stop();
  });

  // The contract cases are not about WAIT's timeout: on a loaded CI machine a replica can take
  // longer than 100 ms to acknowledge, and a case would be refused by chance. They get a second
  // pair of stores on the same clients with a roomier timeout; the stall cases below keep 100 ms.
  for (const c of storeContractCases)
    it(c.name, () =>
      c.run({
        store: () => (contractA ??= createRedisStore({ client: clientA, prefix, replicaAck: CONTRACT_ACK })),
        otherStore: () => (contractB ??= createRedisStore({ client: clientB, prefix, replicaAck: CONTRACT_ACK })),
      }),
    );

  it('refuses the claims of exactly the shard whose replica is stalled: WAIT goes to the key’s own master', async () => {
    const [stalled] = await shards();
    stall(stalled!.replica);
    const outcomes: { key: string; onStalled: boolean; result: string }[] = [];
    for (let i = 0; i < 24; i++) {
      const key = `route:${i}:${randomUUID()}`;
      const onStalled = (await masterOf(clientA, key)) === stalled!.master;
      const result = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY }).then(
        (claim) => claim.status,
        (error: unknown) =>
          error instanceof IdempotencyStoreUnavailableError ? `refused: ${error.message}` : String(error),
      );
      outcomes.push({ key, onStalled, result });
    }
    expect(outcomes.some((o) => o.onStalled)).toBe(true);
    expect(outcomes.some((o) => !o.onStalled)).toBe(true);
    for (const o of outcomes) {
      if (o.onStalled) expect(o.result).toMatch(/^refused: .*acknowledged by 0 of the 1 replicas.*not acquired/);
      else expect(o.result).toBe('acquired');
    }
    // The refused claims were given back: once the replica is back, each key is acquired at once,
    // as a released key (not a recovered one), rather than held in flight for its 60 s lease.
    cluster.server(stalled!.replica).resume();
    paused = [];
    for (const o of outcomes.filter((x) => x.onStalled)) {
      const again = await storeB.claim({ key: o.key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      expect(again).toMatchObject({ status: 'acquired', recovered: false });
    }
  });

  it('without replicaAck the same stalled replica changes nothing: the master alone acknowledges (control)', async () => {
    const plain = createRedisStore({ client: clientA, prefix });
    for (const { replica } of await shards()) stall(replica);
    const claim = await plain.claim({ key: `plain:${randomUUID()}`, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(claim.status).toBe('acquired');
  });

  it('answers 503 with Retry-After before the handler runs when no replica acknowledges the claim', async () => {
    let runs = 0;
    const idem = createIdempotency({ store: storeA });
    const request = () =>
      new Request('http://x/pay', { method: 'POST', headers: { 'idempotency-key': `k-${key}` }, body: '{"a":1}' });
    const handler = async () => {
      runs++;
      return new Response('paid', { status: 201 });
    };
    const key = randomUUID();
    for (const { replica } of await shards()) stall(replica);
    const refused = await idem.handle(request(), handler);
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await refused.json()).code).toBe('IDEMPO_STORE_UNAVAILABLE');
    expect(runs).toBe(0);
    for (const port of paused) cluster.server(port).resume();
    paused = [];
    const ran = await idem.handle(request(), handler);
    expect(ran.status).toBe(201);
    expect(runs).toBe(1);
  });

  it('keeps the key when the completion is not acknowledged: 503 IDEMPO_RESULT_NOT_STORED, never the success; stored once replicas catch up', async () => {
    let runs = 0;
    const idem = createIdempotency({ store: storeA, completeTimeout: '400ms', lease: '10s' });
    const key = randomUUID();
    const request = () =>
      new Request('http://x/pay', { method: 'POST', headers: { 'idempotency-key': key }, body: '{"a":2}' });
    const replicas = (await shards()).map((s) => s.replica);
    const first = await idem.handle(request(), async () => {
      runs++;
      for (const port of replicas) stall(port); // the claim was acknowledged; the completion will not be
      return new Response('paid', { status: 201 });
    });
    expect(first.status).toBe(503);
    expect((await first.json()).code).toBe('IDEMPO_RESULT_NOT_STORED');
    // The key is kept: a retry is held off (the master has the completed record, but its replay waits
    // for the replicas too, so 503), not run again and not given the success.
    const held = await idem.handle(request(), async () => {
      runs++;
      return new Response('paid again', { status: 201 });
    });
    expect(held.status).toBe(503);
    expect(runs).toBe(1);
    for (const port of paused) cluster.server(port).resume();
    paused = [];
    // idempo keeps trying to store the result in the background; once acknowledged, it replays.
    let replay: Response | undefined;
    for (let i = 0; i < 50 && replay?.status !== 201; i++) {
      await sleep(100);
      replay = await idem.handle(request(), async () => {
        runs++;
        return new Response('paid again', { status: 201 });
      });
    }
    expect(replay?.status).toBe(201);
    expect(replay?.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay?.text()).toBe('paid');
    expect(runs).toBe(1);
  });

  it('rejects a replicaAck it cannot honour', () => {
    expect(() => createRedisStore({ client: clientA, replicaAck: { replicas: 0 } })).toThrow(/replicas/);
    expect(() => createRedisStore({ client: clientA, replicaAck: { replicas: 1, timeout: 0 } })).toThrow(/timeout/);
  });

  // Last: it moves a shard's master.
  it('follows a failover: a write pipeline that meets MOVED refreshes the client’s slot map and goes to the new master', async () => {
    const store = createRedisStore({ client: clientA, prefix, replicaAck: CONTRACT_ACK });
    const [shard] = await shards();
    let key = '';
    for (let i = 0; !key; i++) if ((await masterOf(clientA, `moved:${i}`)) === shard!.master) key = `moved:${i}`;
    // clientA has served this slot from the old master.
    const before = await store.claim({ key: `${key}:before`, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(before.status).toBe('acquired');
    const node = (port: number) => new Redis({ host: '127.0.0.1', port, lazyConnect: true });
    const replica = node(shard!.replica);
    await replica.connect();
    try {
      // Coordinated: the replica takes the slots over and the old master becomes its replica.
      await replica.cluster('FAILOVER');
      const giveUpAt = Date.now() + 20_000;
      for (;;) {
        const old = (await cluster.topology()).find((n) => n.port === shard!.master);
        if (old?.role === 'replica' && old.masterPort === shard!.replica) break;
        if (Date.now() > giveUpAt) throw new Error('the failover never completed');
        await sleep(50);
      }
      while (Number(await replica.call('WAIT', '1', '200')) < 1) {
        if (Date.now() > giveUpAt) throw new Error('the old master never acknowledged as a replica');
      }
      // clientA still maps the slot to the old master, which now answers MOVED to every write.
      const claim = await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      expect(claim.status).toBe('acquired');
      if (claim.status !== 'acquired') return;
      expect(await store.complete(key, claim.token, response('after failover'), DAY)).toBe('ok');
      expect(String(await replica.get(`${prefix}{${key}}`))).toMatch(/after failover$/);
    } finally {
      replica.disconnect();
      await store.close?.();
    }
  });
});
