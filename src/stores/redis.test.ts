import { randomUUID } from 'node:crypto';
import { Redis, type RedisOptions, ReplyError } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisServer, startRedisServer } from '../../test/helpers/redis-cluster.js';
import { commandCallsIn, delta } from '../../test/helpers/redis-commandstats.js';
import { claimOverTwoTicks, countSocketWrites } from '../../test/helpers/socket-writes.js';
import { watchCommands } from '../../test/redis/monitor.js';
import {
  IdempotencyConfigInvalidError,
  type IdempotencyStore,
  IdempotencyStoreUnavailableError,
  type StoredResponse,
} from '../vocabulary/index.js';
import { storeContractCases } from './contract.js';
import { createRedisStore } from './redis.js';

const SHARED = { host: '127.0.0.1', port: 6379 };
const DAY = 86_400_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function response(text: string): StoredResponse {
  return { status: 200, headers: [['content-type', 'text/plain']], body: new TextEncoder().encode(text) };
}

async function connect(options: RedisOptions = SHARED): Promise<Redis> {
  const client = new Redis({ ...options, lazyConnect: true });
  await client.connect();
  return client;
}

/** Deletes every key under `prefix` on a standalone server. */
async function deleteKeys(client: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await client.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await client.unlink(...keys);
  } while (cursor !== '0');
}

/** Total command calls per command since the last CONFIG RESETSTAT, without INFO itself. */
async function commandCalls(admin: Redis): Promise<Record<string, number>> {
  // INFO itself, and the ECHO markers watchCommands sends to find the app's connection.
  return commandCallsIn(await admin.info('commandstats'), ['info', 'echo']);
}

interface SharedServerStores {
  prefix: string;
  clientA: Redis;
  clientB: Redis;
  storeA: IdempotencyStore;
  storeB: IdempotencyStore;
}

/**
 * Two stores on two connections to the shared server, under a prefix of their own, set up before
 * and torn down after the enclosing describe block, with the store contract run on them.
 */
function contractOnSharedServer(options: RedisOptions = SHARED): SharedServerStores {
  const shared = { prefix: `idempo-test:${randomUUID()}:` } as SharedServerStores;
  beforeAll(async () => {
    shared.clientA = await connect(options);
    shared.clientB = await connect(options);
    shared.storeA = createRedisStore({ client: shared.clientA, prefix: shared.prefix });
    shared.storeB = createRedisStore({ client: shared.clientB, prefix: shared.prefix });
  });
  afterAll(async () => {
    await shared.storeA?.close?.();
    await shared.storeB?.close?.();
    if (shared.clientA) await deleteKeys(shared.clientA, shared.prefix);
    await shared.clientA?.quit();
    await shared.clientB?.quit();
  });
  for (const c of storeContractCases) {
    it(c.name, () => c.run({ store: () => shared.storeA, otherStore: () => shared.storeB }));
  }
  return shared;
}

describe('redis store on the standalone server at 127.0.0.1:6379', () => {
  const shared = contractOnSharedServer();
  const { prefix } = shared;
  let clientA: Redis;
  let storeA: IdempotencyStore;
  let storeB: IdempotencyStore;
  beforeAll(() => {
    ({ clientA, storeA, storeB } = shared);
  });

  it('keeps each record in one string and its steps in a second key under one hash tag, the lease as its expiry', async () => {
    const key = `k:${randomUUID()}`;
    const before = Date.now();
    const claimed = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(claimed.status).toBe('acquired');
    if (claimed.status !== 'acquired') return;
    expect(Number.isSafeInteger(claimed.token)).toBe(true);
    // The app server's clock in ms, times 1024, plus random low bits.
    expect(Math.floor(claimed.token / 1024)).toBeGreaterThanOrEqual(before);
    expect(Math.floor(claimed.token / 1024)).toBeLessThanOrEqual(Date.now());
    const record = `${prefix}{${key}}`;
    expect(await clientA.get(record)).toBe(`I|${claimed.token}|${DAY}|0|fp`);
    expect(await storeA.saveStep(key, claimed.token, 's', '1')).toBe('ok');
    expect(await clientA.get(record)).toBe(`I|${claimed.token}|${DAY}|s|fp`);
    expect(await clientA.exists(record, `${record}:steps`)).toBe(2);
    // The record expires when lease and ttl have both passed: its lease is PTTL - ttl.
    const pttl = await clientA.pttl(record);
    expect(pttl).toBeGreaterThan(DAY + 55_000);
    expect(pttl).toBeLessThanOrEqual(DAY + 60_000);
    const headers: [string, string][] = [['content-type', 'text/plain; charset=ü']];
    expect(await storeA.complete(key, claimed.token, { status: 201, headers, body: Buffer.from('done') }, DAY)).toBe(
      'ok',
    );
    const json = JSON.stringify(headers);
    expect(await clientA.get(record)).toBe(`C|2|fp201|${Buffer.byteLength(json)}|${json}done`);
    expect(await clientA.exists(`${record}:steps`)).toBe(0);
  });

  it('clears steps an earlier, expired lifetime of the key left behind when the new one saves its first', async () => {
    const key = `k:${randomUUID()}`;
    const steps = `${prefix}{${key}}:steps`;
    await clientA.hset(steps, 'old', '"from an earlier lifetime"');
    const claimed = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claimed.status !== 'acquired') throw new Error(claimed.status);
    expect(claimed.steps).toEqual({});
    expect(await storeA.saveStep(key, claimed.token, 'new', '1')).toBe('ok');
    expect(await clientA.hgetall(steps)).toEqual({ new: '1' });
    expect(await storeA.release(key, claimed.token, DAY)).toBe('ok');
    const again = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(again).toMatchObject({ status: 'acquired', steps: { new: '1' }, recovered: false });
  });

  it('names a record left in the hash layout of idempo 0.1 in the error', async () => {
    const key = `k:${randomUUID()}`;
    await clientA.hset(`${prefix}{${key}}`, 'state', 'completed');
    const error = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotencyStoreUnavailableError);
    expect((error as Error).message).toMatch(/WRONGTYPE.*layout of idempo 0\.1/);
  });

  it('falls back to the claim script for good on a server without SET … NX GET (before Redis 7)', async () => {
    // Only Redis 7 is installed here: the client passes every command to the real server but
    // answers plain SETs as Redis 6.2 does, with the syntax error it gives for NX with GET.
    let plainTries = 0;
    const redis6 = Object.assign(Object.create(clientA) as Redis, {
      setBuffer(): Promise<Buffer | null> {
        plainTries++;
        return Promise.reject(new ReplyError('ERR syntax error'));
      },
    });
    const store = createRedisStore({ client: redis6, prefix });
    const key = `k:${randomUUID()}`;
    const claimed = await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claimed.status !== 'acquired') throw new Error(claimed.status);
    expect(await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })).toMatchObject({
      status: 'in_flight',
    });
    expect(await store.complete(key, claimed.token, response('done'), DAY)).toBe('ok');
    const replay = await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(replay.status === 'replay' && new TextDecoder().decode(replay.response.body)).toBe('done');
    expect(await store.claim({ key, fingerprint: 'other', leaseMs: 60_000, ttlMs: DAY })).toEqual({
      status: 'mismatch',
    });
    expect(plainTries).toBe(1);
  });

  it('turns any other error of the plain claim into IdempotencyStoreUnavailableError, and keeps claiming plainly', async () => {
    let failures = 1;
    const flaky = Object.assign(Object.create(clientA) as Redis, {
      setBuffer(...args: [string, string, 'PX', string, 'NX', 'GET']): Promise<Buffer | null> {
        if (failures-- > 0) return Promise.reject(new Error('Connection is closed.'));
        return clientA.setBuffer(...args);
      },
    });
    const store = createRedisStore({ client: flaky, prefix });
    const error = await store
      .claim({ key: `k:${randomUUID()}`, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotencyStoreUnavailableError);
    expect((error as Error).message).toBe('Redis claim failed: Connection is closed.');
    expect(
      await store.claim({ key: `k:${randomUUID()}`, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY }),
    ).toMatchObject({ status: 'acquired' });
  });

  it('rejects a completed record cut short as a store error, not as a response', async () => {
    const key = `k:${randomUUID()}`;
    await clientA.set(`${prefix}{${key}}`, 'C|2|fp200|999|[]', 'PX', 60_000);
    const error = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(IdempotencyStoreUnavailableError);
    expect((error as Error).message).toMatch(/cut short or malformed/);
  });

  it('sends the commands issued in one turn of the event loop to Redis in one socket write', async () => {
    const client = await connect();
    const store = createRedisStore({ client, prefix });
    try {
      await client.ping(); // socket idle
      const counted = countSocketWrites([client]);
      const results = await claimOverTwoTicks(store, 10);
      expect(results.map((r) => r.status)).toEqual(Array(20).fill('acquired'));
      // Uncorked, ioredis writes each of the 20 SETs on its own; corked only until the next
      // tick, in two writes.
      expect(counted.writes).toBe(1);
    } finally {
      await store.close?.();
      await client.quit();
    }
  });

  it('takes the first token above a large earlier one without losing integer precision', async () => {
    const key = `k:${randomUUID()}`;
    const first = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (first.status !== 'acquired') throw new Error(first.status);
    // Simulate a record whose counter ran far up: Lua's tostring would print 9.007199254741e+15.
    const record = `${prefix}{${key}}`;
    await clientA.set(record, `I|9007199254740000|${DAY}|0|fp`, 'KEEPTTL');
    expect(await storeA.release(key, 9_007_199_254_740_000, DAY)).toBe('ok');
    const second = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(second).toMatchObject({ status: 'acquired', token: 9_007_199_254_740_001 });
  });

  it('replays bodies that are not valid UTF-8 byte for byte', async () => {
    const key = `k:${randomUUID()}`;
    const claimed = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claimed.status !== 'acquired') throw new Error(claimed.status);
    const body = Uint8Array.from([0xff, 0xfe, 0x00, 0xc3, 0x28, 0x80, 0x0d, 0x0a, 0xed, 0xa0, 0x80]);
    const headers: [string, string][] = [['x-ü', 'ß "quoted" \\ ']];
    expect(await storeA.complete(key, claimed.token, { status: 200, headers, body }, DAY)).toBe('ok');
    const replay = await storeB.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (replay.status !== 'replay') throw new Error(replay.status);
    expect(Buffer.from(replay.response.body).toString('hex')).toBe(Buffer.from(body).toString('hex'));
    expect(replay.response.headers).toEqual(headers);
  });

  it('replays ASCII, multi-byte UTF-8 and large bodies byte for byte, and keeps them in the record as sent', async () => {
    const emoji = '\u{1F4B3}';
    const bodies = {
      ascii: '{"id":"pay_1","amount":4200,"note":"tab\there\r\n"}',
      utf8: `{"name":"Zo\u00eb \u00c5ngstr\u00f6m","symbol":"\u20ac","card":"${emoji}"}`,
      'ascii over 16 KiB': `"${'x'.repeat(16_384)}"`,
      'utf8 over 16 KiB': `"${'\u00e9'.repeat(9_000)}"`,
    };
    for (const [name, text] of Object.entries(bodies)) {
      const key = `k:${randomUUID()}`;
      const claimed = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      if (claimed.status !== 'acquired') throw new Error(claimed.status);
      // A view into a larger buffer: only its own bytes are the body.
      const backing = Buffer.from(`##${text}##`);
      const body = new Uint8Array(backing.buffer, backing.byteOffset + 2, backing.length - 4);
      const headers: [string, string][] = [['content-type', 'application/json']];
      expect(await storeA.complete(key, claimed.token, { status: 201, headers, body }, DAY)).toBe('ok');
      const replay = await storeB.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      if (replay.status !== 'replay') throw new Error(`${name}: ${replay.status}`);
      expect(Buffer.from(replay.response.body).equals(Buffer.from(text)), name).toBe(true);
      const record = await clientA.getBuffer(`${prefix}{${key}}`);
      expect(record?.subarray(record.length - body.byteLength).equals(Buffer.from(text)), name).toBe(true);
    }
  });

  describe('retention by Redis expiry', () => {
    async function pttls(key: string): Promise<[number, number]> {
      const record = `${prefix}{${key}}`;
      return [await clientA.pttl(record), await clientA.pttl(`${record}:steps`)];
    }

    it('keeps an in-flight record for lease + ttl, a completed one for ttl, and no key without expiry', async () => {
      const key = `k:${randomUUID()}`;
      const claimed = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: 10_000 });
      if (claimed.status !== 'acquired') throw new Error(claimed.status);
      expect(await storeA.saveStep(key, claimed.token, 's', '1')).toBe('ok');
      let [record, steps] = await pttls(key);
      expect(record).toBeGreaterThan(65_000);
      expect(record).toBeLessThanOrEqual(70_000);
      expect(Math.abs(steps - record)).toBeLessThan(100);
      expect(await storeA.renew(key, claimed.token, 120_000)).toBe('ok');
      [record, steps] = await pttls(key);
      expect(record).toBeGreaterThan(125_000);
      expect(Math.abs(steps - record)).toBeLessThan(100);
      expect(await storeA.complete(key, claimed.token, response('x'), 5_000)).toBe('ok');
      [record, steps] = await pttls(key);
      expect(record).toBeGreaterThan(4_000);
      expect(record).toBeLessThanOrEqual(5_000);
      expect(steps).toBe(-2); // steps go with completion
      await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      expect((await pttls(key))[0]).toBeLessThanOrEqual(5_000); // a replay does not extend retention
    });

    it('a renewal never shortens expiry, and a released record keeps its steps for ttl', async () => {
      const key = `k:${randomUUID()}`;
      const claimed = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      if (claimed.status !== 'acquired') throw new Error(claimed.status);
      expect(await storeA.saveStep(key, claimed.token, 's', '1')).toBe('ok');
      expect(await storeA.renew(key, claimed.token, 1_000)).toBe('ok');
      expect((await pttls(key))[0]).toBeGreaterThan(DAY);
      expect(await storeA.release(key, claimed.token, 7_000)).toBe('ok');
      const [record, steps] = await pttls(key);
      expect(record).toBeGreaterThan(6_000);
      expect(record).toBeLessThanOrEqual(7_000);
      expect(Math.abs(steps - record)).toBeLessThan(100);
    });

    it('an abandoned in-flight record is claimable, with its steps, once its lease passes even if ttl is shorter', async () => {
      const key = `k:${randomUUID()}`;
      const first = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 400, ttlMs: 100 });
      if (first.status !== 'acquired') throw new Error(first.status);
      expect(await storeA.saveStep(key, first.token, 'charge', '"ch_1"')).toBe('ok');
      await sleep(200); // past ttl, inside the lease
      expect((await storeB.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })).status).toBe('in_flight');
      await sleep(250); // past the lease, inside lease + ttl
      const second = await storeB.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      expect(second).toMatchObject({ status: 'acquired', recovered: true, steps: { charge: '"ch_1"' } });
    });

    it('an abandoned in-flight record is gone entirely after lease + ttl, and the key starts over above its tokens', async () => {
      const key = `k:${randomUUID()}`;
      const first = await storeA.claim({ key, fingerprint: 'fp', leaseMs: 150, ttlMs: 150 });
      if (first.status !== 'acquired') throw new Error(first.status);
      expect(await storeA.saveStep(key, first.token, 's', '1')).toBe('ok');
      await sleep(450);
      const record = `${prefix}{${key}}`;
      expect(await clientA.exists(record, `${record}:steps`)).toBe(0);
      const again = await storeA.claim({ key, fingerprint: 'other', leaseMs: 60_000, ttlMs: DAY });
      expect(again).toMatchObject({ status: 'acquired', recovered: false, steps: {} });
      if (again.status === 'acquired') expect(again.token).toBeGreaterThan(first.token);
      expect(await storeA.complete(key, first.token, response('stale'), DAY)).toBe('stale');
    });
  });

  describe('waitForChange', () => {
    async function owned(store: IdempotencyStore, leaseMs = 60_000) {
      const key = `k:${randomUUID()}`;
      const claimed = await store.claim({ key, fingerprint: 'fp', leaseMs, ttlMs: DAY });
      if (claimed.status !== 'acquired') throw new Error(claimed.status);
      return { key, token: claimed.token };
    }

    it('wakes every local waiter on a release published from another connection', async () => {
      const { key, token } = await owned(storeB);
      const started = Date.now();
      const waits = [storeA.waitForChange!(key, 5_000), storeA.waitForChange!(key, 5_000)];
      await sleep(100);
      expect(await storeB.release(key, token, DAY)).toBe('ok');
      await Promise.all(waits);
      expect(Date.now() - started).toBeLessThan(2_000);
    });

    it('wakes a waiter on a completion, which publishes only because it waits', async () => {
      const { key, token } = await owned(storeB);
      const record = `${prefix}{${key}}`;
      expect(await clientA.get(record)).toMatch(/^I\|\d+\|\d+\|0\|fp$/);
      const started = Date.now();
      const waiting = storeA.waitForChange!(key, 5_000);
      // The waiter marks the record once its subscription is up.
      while (!/\|w\|fp$/.test((await clientA.get(record)) ?? '')) await sleep(10);
      expect(await storeB.saveStep(key, token, 's', '1')).toBe('ok');
      expect(await clientA.get(record)).toMatch(/\|ws\|fp$/);
      expect(await storeB.complete(key, token, response('done'), DAY)).toBe('ok');
      await waiting;
      expect(Date.now() - started).toBeLessThan(2_000);
    });

    it('returns at once when the record already changed before the wait began', async () => {
      const { key, token } = await owned(storeB);
      expect(await storeB.complete(key, token, response('done'), DAY)).toBe('ok');
      const started = Date.now();
      await storeA.waitForChange!(key, 5_000);
      expect(Date.now() - started).toBeLessThan(2_000);
    });

    it('wakes when the owner’s lease passes, with nothing published', async () => {
      const { key } = await owned(storeB, 300);
      const started = Date.now();
      await storeA.waitForChange!(key, 5_000);
      const waited = Date.now() - started;
      expect(waited).toBeGreaterThanOrEqual(200);
      expect(waited).toBeLessThan(2_000);
    });

    it('times out when nothing changes', async () => {
      const { key } = await owned(storeB);
      const started = Date.now();
      await storeA.waitForChange!(key, 300);
      expect(Date.now() - started).toBeGreaterThanOrEqual(250);
    });

    it('with notify off, polls instead and still sees a completion', async () => {
      const quiet = createRedisStore({ client: clientA, prefix, notify: false, pollInterval: 100 });
      const { key, token } = await owned(quiet);
      const started = Date.now();
      const waiting = quiet.waitForChange!(key, 5_000);
      await sleep(50);
      expect(await quiet.complete(key, token, response('done'), DAY)).toBe('ok');
      await waiting;
      expect(Date.now() - started).toBeLessThan(2_000);
      await quiet.close!();
    });
  });

  it('rejects a prefix with braces and a value that is not a client', () => {
    expect(() => createRedisStore({ client: clientA, prefix: 'a{b}:' })).toThrow(IdempotencyConfigInvalidError);
    expect(() => createRedisStore({ client: {} as never })).toThrow(/ioredis/);
  });

  it('rejects a poll interval that is not a positive duration, under its name or the deprecated one', () => {
    expect(() => createRedisStore({ client: clientA, pollInterval: 'soon' as never })).toThrow(/pollInterval/);
    expect(() => createRedisStore({ client: clientA, pollIntervalMs: 0 })).toThrow(
      expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID', message: expect.stringMatching(/^pollIntervalMs/) }),
    );
  });

  it('turns an unreachable server into IdempotencyStoreUnavailableError at once, with a fail-fast client', async () => {
    const client = new Redis({
      host: '127.0.0.1',
      port: 1,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      retryStrategy: () => null,
    });
    client.on('error', () => {});
    const store = createRedisStore({ client, prefix });
    const error = await store.claim({ key: 'k', fingerprint: 'fp', leaseMs: 1_000, ttlMs: 1_000 }).catch((e) => e);
    expect(error).toBeInstanceOf(IdempotencyStoreUnavailableError);
    expect(error.code).toBe('IDEMPO_STORE_UNAVAILABLE');
    client.disconnect();
  });
});

describe('redis store through clients with ioredis auto-pipelining', () => {
  contractOnSharedServer({ ...SHARED, enableAutoPipelining: true });
});

describe('redis store on a private server', () => {
  let server: RedisServer;
  let admin: Redis;
  let client: Redis;

  beforeAll(async () => {
    server = await startRedisServer();
    admin = await connect({ host: server.host, port: server.port });
    client = await connect({ host: server.host, port: server.port });
  });

  afterAll(async () => {
    await admin?.quit();
    await client?.quit();
    await server?.stop();
  });

  it('costs one round trip per claim and per complete: two for a first request, one for a replay', async () => {
    const store = createRedisStore({ client });
    const firstRequest = async (key: string) => {
      const claimed = await store.claim({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
      if (claimed.status !== 'acquired') throw new Error(claimed.status);
      await store.complete(key, claimed.token, response('body'), DAY);
    };
    await firstRequest('warm-up'); // the first use of a script on a connection sends EVAL, later ones EVALSHA
    await store.claim({ key: 'warm-up', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });

    const watch = await watchCommands(admin, client);
    let stats = await commandCalls(admin);
    const fresh = await watch.during(async () => {
      for (let i = 0; i < 10; i++) await firstRequest(`fresh-${i}`);
    });
    const freshStats = delta(stats, await commandCalls(admin));
    stats = await commandCalls(admin);
    const replays = await watch.during(async () => {
      for (let i = 0; i < 10; i++) {
        const replay = await store.claim({ key: `fresh-${i}`, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
        expect(replay.status).toBe('replay');
      }
    });
    const replayStats = delta(stats, await commandCalls(admin));
    watch.stop();

    expect(fresh).toEqual(Array(10).fill(['set', 'evalsha']).flat());
    expect(replays).toEqual(Array(10).fill('set'));
    expect(fresh.length / 10).toBe(2);
    expect(replays.length / 10).toBe(1);
    // INFO commandstats counts the commands scripts run too. A first request: the claim's SET,
    // then COMPLETE's GET and SET; with no step saved it deletes nothing, and with nobody
    // waiting it publishes nothing.
    expect(freshStats).toEqual({ set: 20, evalsha: 10, get: 10 });
    // A replay is one plain SET … NX GET, and no script.
    expect(replayStats).toEqual({ set: 10 });
  });

  it('close() closes only the store’s own subscriber, never the client it was given', async () => {
    const store = createRedisStore({ client });
    const claimed = await store.claim({ key: 'close', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claimed.status !== 'acquired') throw new Error(claimed.status);
    const waiting = store.waitForChange!('close', 5_000);
    await sleep(200);
    expect(await admin.call('PUBSUB', 'NUMSUB', 'idempo:{close}:changed')).toEqual(['idempo:{close}:changed', 1]);
    const started = Date.now();
    await store.close!();
    await waiting;
    expect(Date.now() - started).toBeLessThan(1_000);
    await sleep(100);
    expect(await admin.call('PUBSUB', 'NUMSUB', 'idempo:{close}:changed')).toEqual(['idempo:{close}:changed', 0]);
    expect(client.status).toBe('ready');
    expect(await store.complete('close', claimed.token, response('x'), DAY)).toBe('ok');
  });

  it('unsubscribes once the last waiter of a key is done', async () => {
    const store = createRedisStore({ client });
    await store.claim({ key: 'unsub', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    await Promise.all([store.waitForChange!('unsub', 200), store.waitForChange!('unsub', 300)]);
    await sleep(100);
    expect(await admin.call('PUBSUB', 'NUMSUB', 'idempo:{unsub}:changed')).toEqual(['idempo:{unsub}:changed', 0]);
    await store.close!();
  });

  it('wakes waiters when its subscriber reconnects, since messages sent meanwhile are lost', async () => {
    const store = createRedisStore({ client });
    const claimed = await store.claim({ key: 'reconnect', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (claimed.status !== 'acquired') throw new Error(claimed.status);
    await store.waitForChange!('reconnect', 200); // opens the subscriber
    const waiting = store.waitForChange!('reconnect', 8_000);
    await sleep(100);
    const started = Date.now();
    await admin.client('KILL', 'TYPE', 'pubsub');
    await waiting;
    expect(Date.now() - started).toBeLessThan(4_000);
    await store.close!();
  });
});
