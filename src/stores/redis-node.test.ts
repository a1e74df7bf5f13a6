// The Redis store through node-redis (`@redis/client`, the client of the `redis` package 5 and
// later) instead of ioredis: the shared store contract on a standalone client and on a cluster
// client, pub/sub wake-ups, the engine end to end, fail-fast on a hung server, and replicaAck on
// a Cluster with replicas. Real servers throughout: the shared one at 6379 and private ones the
// tests start.
import { randomUUID } from 'node:crypto';
import { createClient, createClientPool, createCluster, createSentinel } from '@redis/client';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  type RedisCluster,
  type RedisServer,
  startRedisCluster,
  startRedisServer,
} from '../../test/helpers/redis-cluster.js';
import { commandCallsIn, delta } from '../../test/helpers/redis-commandstats.js';
import { createIdempotency } from '../engine/engine.js';
import {
  IdempotencyConfigInvalidError,
  type IdempotencyStore,
  IdempotencyStoreUnavailableError,
  type StoredResponse,
} from '../vocabulary/index.js';
import { storeContractCases } from './contract.js';
import { createRedisStore } from './redis.js';
import { keySlot } from './redis-node-client.js';

const HOST = '127.0.0.1';
const DAY = 86_400_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function response(text: string): StoredResponse {
  return { status: 200, headers: [['content-type', 'text/plain']], body: new TextEncoder().encode(text) };
}

/** A connected node-redis client, set up as docs/stores/redis.md advises. */
async function connectClient(port = 6379, timeout = 2_000) {
  const client = createClient({
    socket: { host: HOST, port, connectTimeout: 1_000, reconnectStrategy: (retries) => Math.min(retries * 50, 500) },
    disableOfflineQueue: true,
    commandOptions: { timeout },
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

async function connectCluster(cluster: RedisCluster) {
  const client = createCluster({
    rootNodes: cluster.nodes.map(({ host, port }) => ({ socket: { host, port } })),
    defaults: { disableOfflineQueue: true, socket: { connectTimeout: 1_000 } },
    commandOptions: { timeout: 2_000 },
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

type NodeClient = Awaited<ReturnType<typeof connectClient>>;
type NodeCluster = Awaited<ReturnType<typeof connectCluster>>;

/** Deletes every key under `prefix` on a standalone server. */
async function deleteKeys(client: NodeClient, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = (await client.sendCommand(['SCAN', cursor, 'MATCH', `${prefix}*`, 'COUNT', '1000'])) as [
      string,
      string[],
    ];
    cursor = next;
    if (keys.length) await client.sendCommand(['UNLINK', ...keys]);
  } while (cursor !== '0');
}

/** Total calls per command since the server started, without INFO itself. */
async function commandCalls(admin: NodeClient): Promise<Record<string, number>> {
  return commandCallsIn(String(await admin.sendCommand(['INFO', 'commandstats'])), ['info']);
}

/**
 * Waits on `key` through `waiter`, then completes (or releases) it through `owner` 150 ms later,
 * and expects the waiter woken within a second: long before any poll interval the tests set.
 */
async function expectWokenBy(
  waiter: IdempotencyStore,
  owner: IdempotencyStore,
  key: string,
  token: number,
  finish: 'complete' | 'release' = 'complete',
  text = 'done',
): Promise<void> {
  const waiting = waiter.waitForChange!(key, 8_000);
  await sleep(150);
  const changedAt = Date.now();
  if (finish === 'complete') expect(await owner.complete(key, token, response(text), DAY)).toBe('ok');
  else expect(await owner.release(key, token, DAY)).toBe('ok');
  await waiting;
  expect(Date.now() - changedAt).toBeLessThan(1_000);
}

async function acquire(store: IdempotencyStore, key: string, leaseMs = 60_000): Promise<number> {
  const claimed = await store.claim({ key, fingerprint: 'fp', leaseMs, ttlMs: DAY });
  if (claimed.status !== 'acquired') throw new Error(`expected acquired, got ${claimed.status}`);
  return claimed.token;
}

/**
 * A first request runs, its retry replays, a concurrent duplicate gets 409 and a different body
 * 422: through two engines on two stores (two connections), as two app servers would.
 */
async function engineEndToEnd(storeA: IdempotencyStore, storeB: IdempotencyStore): Promise<void> {
  const serverA = createIdempotency({ store: storeA });
  const serverB = createIdempotency({ store: storeB });
  const key = randomUUID();
  const order = (body: string) =>
    new Request('http://shop.test/orders', {
      method: 'POST',
      headers: { 'idempotency-key': key, 'content-type': 'application/json' },
      body,
    });
  let runs = 0;
  let started!: () => void;
  const running = new Promise<void>((resolve) => {
    started = resolve;
  });
  let finish!: () => void;
  const gate = new Promise<void>((resolve) => {
    finish = resolve;
  });
  const handler = async () => {
    runs++;
    started();
    await gate;
    return new Response(`order ${runs}`, { status: 201, headers: { 'x-order': String(runs) } });
  };
  const first = serverA.handle(order('{"sku":"a","qty":1}'), handler);
  await running;
  const duplicate = await serverB.handle(order('{"qty":1,"sku":"a"}'), handler);
  expect(duplicate.status).toBe(409);
  expect((await duplicate.json()).code).toBe('IDEMPO_CONFLICT');
  finish();
  const original = await first;
  expect(original.status).toBe(201);
  expect(await original.text()).toBe('order 1');
  const retry = await serverB.handle(order('{"sku":"a","qty":1}'), handler);
  expect(retry.status).toBe(201);
  expect(retry.headers.get('idempotent-replayed')).toBe('true');
  expect(retry.headers.get('x-order')).toBe('1');
  expect(await retry.text()).toBe('order 1');
  const reused = await serverA.handle(order('{"sku":"b","qty":1}'), handler);
  expect(reused.status).toBe(422);
  expect((await reused.json()).code).toBe('IDEMPO_MISMATCH');
  expect(runs).toBe(1);
}

/**
 * A duplicate waiting with `concurrent: 'wait'` subscribes to its key through the store's
 * node-redis subscriber and marks the record (its `w` flag), so the original's completion
 * publishes; it then gets the original's response, and nothing runs twice. (How soon it is woken
 * the engine bounds too, by re-checking every 500 ms: the store-level tests time the wake-up.)
 */
async function waitingDuplicateReplays(
  client: NodeClient | NodeCluster,
  read: (record: string) => Promise<unknown>,
): Promise<void> {
  const prefix = `idempo-test:${randomUUID()}:`;
  const storeA = createRedisStore({ client, prefix });
  const storeB = createRedisStore({ client, prefix, pollInterval: '10s' });
  try {
    const serverA = createIdempotency({ store: storeA });
    const serverB = createIdempotency({ store: storeB, concurrent: 'wait', waitTimeout: '8s' });
    const pay = () =>
      new Request('http://shop.test/pay', { method: 'POST', headers: { 'idempotency-key': 'pay-1' }, body: '{}' });
    let runs = 0;
    let started!: () => void;
    const running = new Promise<void>((resolve) => {
      started = resolve;
    });
    let finish!: () => void;
    const gate = new Promise<void>((resolve) => {
      finish = resolve;
    });
    const first = serverA.handle(pay(), async () => {
      runs++;
      started();
      await gate;
      return new Response('paid', { status: 201 });
    });
    await running;
    const duplicate = serverB.handle(pay(), async () => {
      runs++;
      return new Response('paid twice', { status: 201 });
    });
    const [info] = (await storeA.list!({})).records;
    const record = `${prefix}{${info!.key}}`;
    const giveUpAt = Date.now() + 3_000;
    while (!/^I\|\d+\|\d+\|w\|/.test(String(await read(record)))) {
      if (Date.now() > giveUpAt) throw new Error(`the waiter never marked ${record}: ${String(await read(record))}`);
      await sleep(10);
    }
    finish();
    const finishedAt = Date.now();
    expect((await first).status).toBe(201);
    const replayed = await duplicate;
    expect(Date.now() - finishedAt).toBeLessThan(1_000);
    expect(replayed.status).toBe(201);
    expect(await replayed.text()).toBe('paid');
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
    expect(await storeA.delete!(info!.key)).toBe('deleted');
  } finally {
    await storeA.close?.();
    await storeB.close?.();
  }
}

describe('redis store through a node-redis client on the standalone server at 127.0.0.1:6379', () => {
  const prefix = `idempo-test:${randomUUID()}:`;
  let clientA: NodeClient;
  let clientB: NodeClient;
  let storeA: IdempotencyStore;
  let storeB: IdempotencyStore;

  beforeAll(async () => {
    clientA = await connectClient();
    clientB = await connectClient();
    storeA = createRedisStore({ client: clientA, prefix });
    storeB = createRedisStore({ client: clientB, prefix });
  });

  afterAll(async () => {
    await storeA?.close?.();
    await storeB?.close?.();
    if (clientA) await deleteKeys(clientA, prefix);
    clientA?.destroy();
    clientB?.destroy();
  });

  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => storeA, otherStore: () => storeB }));

  it('writes the record layout ioredis writes: one string per record, steps under the same hash tag, the lease in its expiry', async () => {
    const key = `k:${randomUUID()}`;
    const token = await acquire(storeA, key);
    const record = `${prefix}{${key}}`;
    expect(await clientA.sendCommand(['GET', record])).toBe(`I|${token}|${DAY}|0|fp`);
    expect(await storeA.saveStep(key, token, 's', '1')).toBe('ok');
    expect(await clientA.sendCommand(['GET', record])).toBe(`I|${token}|${DAY}|s|fp`);
    const pttl = Number(await clientA.sendCommand(['PTTL', record]));
    expect(pttl).toBeGreaterThan(DAY + 55_000);
    expect(pttl).toBeLessThanOrEqual(DAY + 60_000);
    const headers: [string, string][] = [['content-type', 'text/plain; charset=ü']];
    expect(await storeA.complete(key, token, { status: 201, headers, body: Buffer.from('done') }, DAY)).toBe('ok');
    const json = JSON.stringify(headers);
    expect(await clientA.sendCommand(['GET', record])).toBe(`C|2|fp201|${Buffer.byteLength(json)}|${json}done`);
    expect(await clientA.sendCommand(['EXISTS', `${record}:steps`])).toBe(0);
  });

  it('replays bodies that are not valid UTF-8 byte for byte (replies read as Buffers, not strings)', async () => {
    const key = `k:${randomUUID()}`;
    const token = await acquire(storeA, key);
    const body = Uint8Array.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80, 0x0d, 0x0a, 0xed, 0xa0, 0x80]);
    const headers: [string, string][] = [['x-ü', 'ß "quoted" \\ ']];
    expect(await storeA.complete(key, token, { status: 200, headers, body }, DAY)).toBe('ok');
    const replay = await storeB.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (replay.status !== 'replay') throw new Error(replay.status);
    expect(Buffer.from(replay.response.body).toString('hex')).toBe(Buffer.from(body).toString('hex'));
    expect(replay.response.headers).toEqual(headers);
    const inspected = await storeB.inspect?.(key);
    expect(inspected?.state).toBe('completed');
    expect(Buffer.from(inspected?.response?.body ?? []).toString('hex')).toBe(Buffer.from(body).toString('hex'));
  });

  it('wakes a waiter through pub/sub, long before its poll interval', async () => {
    const slowPoll = createRedisStore({ client: clientA, prefix, pollInterval: '10s' });
    try {
      for (const finish of ['complete', 'release'] as const) {
        const key = `k:${randomUUID()}`;
        await expectWokenBy(slowPoll, storeB, key, await acquire(storeB, key), finish);
      }
    } finally {
      await slowPoll.close?.();
    }
  });

  it('serves the engine end to end: the first request runs, its retry replays, a concurrent duplicate gets 409, another body 422', async () => {
    await engineEndToEnd(storeA, storeB);
  });

  it('shares records with an ioredis store: app servers on either client run a key once, wake and replay each other', async () => {
    const ioredis = new Redis({ host: HOST, port: 6379, lazyConnect: true });
    await ioredis.connect();
    const viaIoredis = createRedisStore({ client: ioredis, prefix, pollInterval: '10s' });
    const viaNodeRedis = createRedisStore({ client: clientA, prefix, pollInterval: '10s' });
    try {
      for (const [first, second] of [
        [viaIoredis, viaNodeRedis],
        [viaNodeRedis, viaIoredis],
      ] as const) {
        const key = `k:${randomUUID()}`;
        const token = await acquire(first, key);
        const duplicate = await second.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
        expect(duplicate.status).toBe('in_flight');
        expect((await second.claim({ key, fingerprint: 'other', leaseMs: 60_000, ttlMs: DAY })).status).toBe(
          'mismatch',
        );
        expect(await second.saveStep(key, token, 'charge', '"ch_1"')).toBe('ok');
        await expectWokenBy(second, first, key, token, 'complete', `done ${token}`);
        const replay = await second.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
        if (replay.status !== 'replay') throw new Error(`expected a replay, got ${replay.status}`);
        expect(new TextDecoder().decode(replay.response.body)).toBe(`done ${token}`);
      }
    } finally {
      await viaIoredis.close?.();
      await viaNodeRedis.close?.();
      ioredis.disconnect();
    }
  });

  it("gives a duplicate waiting with concurrent: 'wait' the original's response once it completes, subscribed through node-redis", async () => {
    await waitingDuplicateReplays(clientB, (record) => clientA.sendCommand(['GET', record]));
  });

  it('lists, inspects and deletes records through the operations', async () => {
    const own = `ops-${randomUUID()}:`;
    const store = createRedisStore({ client: clientA, prefix: own });
    try {
      const tokens = new Map<string, number>();
      for (let i = 0; i < 5; i++) tokens.set(`k${i}`, await acquire(store, `k${i}`));
      expect(await store.complete('k0', tokens.get('k0')!, response('zero'), DAY)).toBe('ok');
      const seen: string[] = [];
      let cursor: string | undefined;
      do {
        const page = await store.list!({ limit: 2, ...(cursor === undefined ? {} : { cursor }) });
        expect(page.records.length).toBeLessThanOrEqual(2);
        seen.push(...page.records.map((r) => `${r.key}:${r.state}`));
        cursor = page.cursor;
      } while (cursor !== undefined);
      expect(seen.sort()).toEqual(['k0:completed', 'k1:in_flight', 'k2:in_flight', 'k3:in_flight', 'k4:in_flight']);
      expect((await store.inspect!('k1'))?.token).toBe(tokens.get('k1'));
      expect(await store.delete!('k1')).toBe('in_flight');
      expect(await store.delete!('k1', { force: true })).toBe('deleted');
      expect(await store.inspect!('k1')).toBeUndefined();
      expect(await store.delete!('k0')).toBe('deleted');
    } finally {
      await store.close?.();
      await deleteKeys(clientA, own);
    }
  });

  it('refuses a client it cannot use, with a message that says why', async () => {
    const unconnected = createClient({ socket: { host: HOST, port: 6379 } });
    expect(() => createRedisStore({ client: unconnected })).toThrow(IdempotencyConfigInvalidError);
    expect(() => createRedisStore({ client: unconnected })).toThrow(/not connected.*connect\(\)/);
    const pool = createClientPool({ socket: { host: HOST, port: 6379 } });
    expect(() => createRedisStore({ client: pool as never })).toThrow(/pool is not supported/);
    expect(() => createRedisStore({ client: clientA.legacy() as never })).toThrow(/node-redis 4.*not supported/);
    const sentinel = createSentinel({ name: 'mymaster', sentinelRootNodes: [{ host: HOST, port: 26379 }] });
    expect(() => createRedisStore({ client: sentinel as never })).toThrow(/Sentinel client is not supported/);
    expect(() => createRedisStore({ client: {} as never })).toThrow(/ioredis.*node-redis/);
    expect(() => createRedisStore({ client: clientA, prefix: 'a{b}:' })).toThrow(IdempotencyConfigInvalidError);
    // A client closed after the store was made fails its commands as the store being unavailable.
    const closing = await connectClient();
    const store = createRedisStore({ client: closing, prefix });
    closing.destroy();
    const error = await store.claim({ key: 'k', fingerprint: 'fp', leaseMs: 1_000, ttlMs: 1_000 }).catch((e) => e);
    expect(error).toBeInstanceOf(IdempotencyStoreUnavailableError);
  });
});

describe('redis store through a node-redis client on a private server', () => {
  let server: RedisServer;
  let admin: NodeClient;
  let client: NodeClient;

  beforeAll(async () => {
    server = await startRedisServer();
    admin = await connectClient(server.port);
    client = await connectClient(server.port, 300);
  });

  afterEach(() => {
    if (server && !server.running) return;
    server?.resume();
  });

  afterAll(async () => {
    admin?.destroy();
    client?.destroy();
    await server?.stop();
  });

  async function firstRequest(store: IdempotencyStore, key: string): Promise<void> {
    const token = await acquire(store, key);
    expect(await store.complete(key, token, response('body'), DAY)).toBe('ok');
  }

  it('sends the commands ioredis sends: SET … NX GET per claim, EVALSHA per completion, a plain SET per replay', async () => {
    const store = createRedisStore({ client });
    await firstRequest(store, 'warm-up'); // the script's first EVALSHA meets NOSCRIPT and goes again as EVAL
    let stats = await commandCalls(admin);
    for (let i = 0; i < 10; i++) await firstRequest(store, `fresh-${i}`);
    const fresh = delta(stats, await commandCalls(admin));
    stats = await commandCalls(admin);
    for (let i = 0; i < 10; i++) {
      const replay = await store.claim({ key: `fresh-${i}`, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      expect(replay.status).toBe('replay');
    }
    const replays = delta(stats, await commandCalls(admin));
    // As in redis.test.ts for ioredis: the claim's SET, then COMPLETE's GET and SET.
    expect(fresh).toEqual({ set: 20, evalsha: 10, get: 10 });
    expect(replays).toEqual({ set: 10 });
    await store.close?.();
  });

  it('runs a script Redis has forgotten (SCRIPT FLUSH) again with EVAL, once, then EVALSHA', async () => {
    const store = createRedisStore({ client });
    await firstRequest(store, 'before-flush');
    await admin.sendCommand(['SCRIPT', 'FLUSH']);
    const stats = await commandCalls(admin);
    await firstRequest(store, 'after-flush-1');
    await firstRequest(store, 'after-flush-2');
    const calls = delta(stats, await commandCalls(admin));
    // EVALSHA (NOSCRIPT: not run), EVAL, then EVALSHA for the second completion.
    expect(calls.evalsha).toBe(2);
    expect(calls.eval).toBe(1);
    const replay = await store.claim({ key: 'after-flush-1', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(replay.status).toBe('replay');
    await store.close?.();
  });

  it('close() closes only the store’s own subscriber, never the client it was given', async () => {
    const store = createRedisStore({ client });
    const token = await acquire(store, 'close');
    const waiting = store.waitForChange!('close', 5_000);
    await sleep(200);
    expect(await admin.sendCommand(['PUBSUB', 'NUMSUB', 'idempo:{close}:changed'])).toEqual([
      'idempo:{close}:changed',
      1,
    ]);
    const started = Date.now();
    await store.close!();
    await waiting;
    expect(Date.now() - started).toBeLessThan(1_000);
    await sleep(100);
    expect(await admin.sendCommand(['PUBSUB', 'NUMSUB', 'idempo:{close}:changed'])).toEqual([
      'idempo:{close}:changed',
      0,
    ]);
    expect(client.isReady).toBe(true);
    expect(await store.complete('close', token, response('x'), DAY)).toBe('ok');
  });

  it('wakes waiters when its subscriber reconnects, since messages sent meanwhile are lost', async () => {
    const store = createRedisStore({ client, pollInterval: '30s' });
    await acquire(store, 'reconnect');
    await store.waitForChange!('reconnect', 200); // opens the subscriber
    const waiting = store.waitForChange!('reconnect', 8_000);
    await sleep(100);
    const started = Date.now();
    await admin.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub']);
    await waiting;
    expect(Date.now() - started).toBeLessThan(4_000);
    // Subscribed again: a later completion wakes a waiter at once.
    await expectWokenBy(store, store, 'after-reconnect', await acquire(store, 'after-reconnect'));
    await store.close!();
  });

  it('fails fast on a hung server: no reply within commandOptions.timeout is IdempotencyStoreUnavailableError, and it serves again once the server resumes', async () => {
    const store = createRedisStore({ client });
    await firstRequest(store, 'before-hang');
    server.pause();
    const started = Date.now();
    const error = await store
      .claim({ key: 'during-hang', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })
      .catch((e: unknown) => e);
    const waited = Date.now() - started;
    expect(error).toBeInstanceOf(IdempotencyStoreUnavailableError);
    expect((error as Error).message).toMatch(/did not reply within 300 ms/);
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(waited).toBeLessThan(2_000);
    server.resume();
    const replay = await store.claim({ key: 'before-hang', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(replay.status).toBe('replay');
    await store.close?.();
  });
});

/** The port of the master serving `record`, as the cluster sees it now. */
async function masterPortOf(client: NodeCluster, record: string): Promise<number> {
  const slot = Number(await client.sendCommand(undefined, true, ['CLUSTER', 'KEYSLOT', record]));
  const ranges = (await client.sendCommand(undefined, true, ['CLUSTER', 'SLOTS'])) as [
    number,
    number,
    [string, number],
  ][];
  const range = ranges.find(([from, to]) => slot >= from && slot <= to);
  if (!range) throw new Error(`no master serves slot ${slot}`);
  return Number(range[2][1]);
}

/** Runs `fn` on a plain connection of its own to one node. */
async function onNode<T>(port: number, fn: (node: NodeClient) => Promise<T>): Promise<T> {
  const node = await connectClient(port);
  try {
    return await fn(node);
  } finally {
    node.destroy();
  }
}

describe('redis store through a node-redis cluster client on a three-master Redis Cluster', () => {
  const prefix = `idempo-test:${randomUUID()}:`;
  let cluster: RedisCluster;
  let clientA: NodeCluster;
  let clientB: NodeCluster;
  let storeA: IdempotencyStore;
  let storeB: IdempotencyStore;

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3 });
    clientA = await connectCluster(cluster);
    clientB = await connectCluster(cluster);
    storeA = createRedisStore({ client: clientA, prefix });
    storeB = createRedisStore({ client: clientB, prefix });
  });

  afterAll(async () => {
    await storeA?.close?.();
    await storeB?.close?.();
    clientA?.destroy();
    clientB?.destroy();
    await cluster?.stop();
  });

  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => storeA, otherStore: () => storeB }));

  it('spreads records over all three masters, each record’s keys in one slot, and lists them from every master', async () => {
    const own = `spread-${randomUUID()}:`;
    const store = createRedisStore({ client: clientA, prefix: own });
    const owners = new Set<number>();
    const keys: string[] = [];
    for (let i = 0; i < 30; i++) {
      const key = `spread:${i}`;
      const token = await acquire(store, key);
      expect(await store.saveStep(key, token, 's', '1')).toBe('ok');
      const record = `${own}{${key}}`;
      const slot = await clientA.sendCommand(undefined, true, ['CLUSTER', 'KEYSLOT', record]);
      expect(await clientA.sendCommand(undefined, true, ['CLUSTER', 'KEYSLOT', `${record}:steps`])).toBe(slot);
      owners.add(await masterPortOf(clientA, record));
      keys.push(key);
    }
    expect(owners.size).toBe(3);
    const listed: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await store.list!({ limit: 7, ...(cursor === undefined ? {} : { cursor }) });
      listed.push(...page.records.map((r) => r.key));
      cursor = page.cursor;
    } while (cursor !== undefined);
    expect(listed.sort()).toEqual([...keys].sort());
    for (const key of keys) expect(await store.delete!(key, { force: true })).toBe('deleted');
    await store.close?.();
  });

  it('computes the slot of a key as Redis does, hash tags included', async () => {
    const keys = [
      '',
      'a',
      'idempo:{k}',
      'idempo:{k}:steps',
      'x{}y',
      '{}{a}',
      'a{b',
      'a}b{c}',
      'ü{ß}',
      `${prefix}{${randomUUID()}}`,
    ];
    for (const key of keys) {
      expect(keySlot(key), key).toBe(Number(await clientA.sendCommand(undefined, true, ['CLUSTER', 'KEYSLOT', key])));
    }
  });

  it('wakes a waiter on any master’s completion through plain PUBLISH, long before its poll interval', async () => {
    // The subscriber listens on one node; PUBLISH in a Cluster reaches every node, so keys on
    // any master wake it. Several keys make it likely that some live elsewhere.
    const slowPoll = createRedisStore({ client: clientA, prefix, pollInterval: '10s' });
    try {
      for (let i = 0; i < 5; i++) {
        const key = `wait:${i}:${randomUUID()}`;
        await expectWokenBy(slowPoll, storeB, key, await acquire(storeB, key));
      }
    } finally {
      await slowPoll.close?.();
    }
  });

  it('wakes waiters when its subscriber’s connection comes back, since messages sent meanwhile are lost', async () => {
    const store = createRedisStore({ client: clientA, prefix, pollInterval: '30s' });
    try {
      const key = `reconnect:${randomUUID()}`;
      await acquire(store, key);
      await store.waitForChange!(key, 300); // opens the subscriber
      const waiting = store.waitForChange!(key, 8_000);
      await sleep(100);
      const started = Date.now();
      for (const { port } of cluster.nodes)
        await onNode(port, (node) => node.sendCommand(['CLIENT', 'KILL', 'TYPE', 'pubsub']));
      await waiting;
      expect(Date.now() - started).toBeLessThan(4_000);
      // Subscribed again: a later completion wakes a waiter at once.
      const next = `after-reconnect:${randomUUID()}`;
      await expectWokenBy(store, storeB, next, await acquire(storeB, next));
    } finally {
      await store.close?.();
    }
  });

  it('serves the engine end to end: the first request runs, its retry replays, a concurrent duplicate gets 409, another body 422', async () => {
    await engineEndToEnd(storeA, storeB);
  });

  it("gives a duplicate waiting with concurrent: 'wait' the original's response once it completes, subscribed through node-redis", async () => {
    await waitingDuplicateReplays(clientB, (record) => clientA.sendCommand(record, true, ['GET', record]));
  });
});

describe('redis store through a node-redis cluster client with replicaAck on 3 masters + 3 replicas', () => {
  const ACK = { replicas: 1, timeout: '100ms' } as const;
  const prefix = `idempo-test:${randomUUID()}:`;
  let cluster: RedisCluster;
  let clientA: NodeCluster;
  let clientB: NodeCluster;
  let storeA: IdempotencyStore;
  let storeB: IdempotencyStore;
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

  function resumeAll(): void {
    for (const port of paused) cluster.server(port).resume();
    paused = [];
  }

  /** Until every master's WAIT counts its replica: a fresh replica acknowledges a moment after its link is up. */
  async function replicasAcknowledging(): Promise<void> {
    for (const { master } of await shards()) {
      await onNode(master, async (node) => {
        const giveUpAt = Date.now() + 20_000;
        while (Number(await node.sendCommand(['WAIT', '1', '200'])) < 1) {
          if (Date.now() > giveUpAt) throw new Error(`the replica of master ${master} never acknowledged`);
        }
      });
    }
  }

  const masterOf = (key: string) => masterPortOf(clientA, `${prefix}{${key}}`);

  async function waitCalls(port: number): Promise<number> {
    return onNode(port, async (node) => (await commandCalls(node)).wait ?? 0);
  }

  beforeAll(async () => {
    cluster = await startRedisCluster({ masters: 3, replicas: 1 });
    clientA = await connectCluster(cluster);
    clientB = await connectCluster(cluster);
    storeA = createRedisStore({ client: clientA, prefix, replicaAck: ACK });
    storeB = createRedisStore({ client: clientB, prefix, replicaAck: ACK });
    await replicasAcknowledging();
  }, 60_000);

  afterEach(resumeAll);

  afterAll(async () => {
    resumeAll();
    await storeA?.close?.();
    await storeB?.close?.();
    clientA?.destroy();
    clientB?.destroy();
    await cluster?.stop();
  });

  it('claims, completes and replays with the acknowledgement of the key’s own master’s replica, WAIT beside each write', async () => {
    const key = `acked:${randomUUID()}`;
    const record = `${prefix}{${key}}`;
    const master = await masterOf(key);
    const { replica } = (await shards()).find((s) => s.master === master)!;
    const others = (await shards()).filter((s) => s.master !== master).map((s) => s.master);
    const before = await Promise.all([master, ...others].map(waitCalls));
    // A roomier WAIT timeout than ACK's 100 ms: this case is about where WAIT goes, and a replica
    // on a loaded machine can take longer than 100 ms now and then.
    const roomy = { replicas: 1, timeout: '2s' } as const;
    const relaxedA = createRedisStore({ client: clientA, prefix, replicaAck: roomy });
    const relaxedB = createRedisStore({ client: clientB, prefix, replicaAck: roomy });
    const token = await acquire(relaxedA, key);
    expect(await relaxedA.complete(key, token, response('acked'), DAY)).toBe('ok');
    const replay = await relaxedB.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(replay.status === 'replay' && new TextDecoder().decode(replay.response.body)).toBe('acked');
    const after = await Promise.all([master, ...others].map(waitCalls));
    // One WAIT each for the claim, the completion and the replay, on the master that took them.
    expect(after[0]! - before[0]!).toBe(3);
    for (let i = 1; i < after.length; i++) expect(after[i]).toBe(before[i]);
    // And the replica holds the completed record.
    const onReplica = await onNode(replica, async (node) => {
      await node.sendCommand(['READONLY']);
      return node.sendCommand(['GET', record]);
    });
    expect(String(onReplica)).toMatch(/^C\|2\|fp200\|.*acked$/);
  });

  it('refuses the claims of exactly the shard whose replica is stalled, and gives their keys back', async () => {
    const [stalled] = await shards();
    stall(stalled!.replica);
    const outcomes: { key: string; onStalled: boolean; result: string }[] = [];
    for (let i = 0; i < 12; i++) {
      const key = `route:${i}:${randomUUID()}`;
      const onStalled = (await masterOf(key)) === stalled!.master;
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
    resumeAll();
    await replicasAcknowledging();
    for (const o of outcomes.filter((x) => x.onStalled)) {
      const again = await storeB.claim({ key: o.key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      expect(again).toMatchObject({ status: 'acquired', recovered: false });
    }
  });

  it('answers 503 with Retry-After before the handler runs when no replica acknowledges the claim', async () => {
    let runs = 0;
    const idem = createIdempotency({ store: storeA });
    const key = randomUUID();
    const request = () =>
      new Request('http://x/pay', { method: 'POST', headers: { 'idempotency-key': key }, body: '{"a":1}' });
    const handler = async () => {
      runs++;
      return new Response('paid', { status: 201 });
    };
    for (const { replica } of await shards()) stall(replica);
    const refused = await idem.handle(request(), handler);
    expect(refused.status).toBe(503);
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await refused.json()).code).toBe('IDEMPO_STORE_UNAVAILABLE');
    expect(runs).toBe(0);
    resumeAll();
    await replicasAcknowledging();
    const ran = await idem.handle(request(), handler);
    expect(ran.status).toBe(201);
    expect(runs).toBe(1);
  });

  it('keeps the key when the completion is not acknowledged: 503 IDEMPO_RESULT_NOT_STORED, never the success; replayed once replicas catch up', async () => {
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
    const held = await idem.handle(request(), async () => {
      runs++;
      return new Response('paid again', { status: 201 });
    });
    expect(held.status).toBe(503);
    expect(runs).toBe(1);
    resumeAll();
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

  // Last: it moves a slot range to another master.
  it('follows a failover: a pipeline that meets MOVED refreshes the slot map and goes to the new master', async () => {
    const [shard] = await shards();
    let key = '';
    for (let i = 0; !key; i++) if ((await masterOf(`moved:${i}`)) === shard!.master) key = `moved:${i}`;
    // A coordinated failover: the replica takes over the master's slots, and the master becomes its replica.
    await onNode(shard!.replica, (node) => node.sendCommand(['CLUSTER', 'FAILOVER']));
    const giveUpAt = Date.now() + 20_000;
    const switched = async () => {
      const nodes = await cluster.topology();
      const old = nodes.find((n) => n.port === shard!.master);
      return old?.role === 'replica' && old.masterPort === shard!.replica && (await masterOf(key)) === shard!.replica;
    };
    while (!(await switched())) {
      if (Date.now() > giveUpAt) throw new Error('the failover never completed');
      await sleep(50);
    }
    await onNode(shard!.replica, async (node) => {
      while (Number(await node.sendCommand(['WAIT', '1', '200'])) < 1) {
        if (Date.now() > giveUpAt) throw new Error('the old master never acknowledged as a replica');
      }
    });
    // storeA's client still maps the slot to the old master, which now answers MOVED.
    const claim = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(claim.status).toBe('acquired');
    if (claim.status !== 'acquired') return;
    expect(await storeA.complete(key, claim.token, response('after failover'), DAY)).toBe('ok');
    const onNewMaster = await onNode(shard!.replica, (node) => node.sendCommand(['GET', `${prefix}{${key}}`]));
    expect(String(onNewMaster)).toMatch(/after failover$/);
  });
});
