/**
 * A client that really hangs up, against an app in its own OS process (the node:http adapter with
 * `ctx.step`, test/redis/app.js) on a real Redis:
 * - while the step's side effect is under way and not yet saved: the work goes on past several
 *   leases, the step's save is accepted (no lost lease), the step runs once, a retry meanwhile gets
 *   409 and afterwards the replay. (Before, the hang-up released the key, the retry ran the step
 *   again and the first run's save was refused.)
 * - while its claim waits on a Redis that is stopped (SIGSTOP): once the claim lands the key is
 *   released at once and the handler never runs, so a retry runs it, well within a 60 s lease.
 *   (Before, the handler ran on the closed request and the lease was renewed for as long as the
 *   process lived: every retry got 409.)
 */
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type RedisServer, startRedisServer } from '../helpers/redis-cluster.js';
import { type AppChild, type AppMessage, startApp } from './child.js';

const REDIS = { host: '127.0.0.1', port: 6379 };
const LEASE_MS = 1_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A keyed POST that the test can hang up on: resolves to `aborted` when it did. */
function postAbortable(port: number, key: string, signal?: AbortSignal) {
  return fetch(`http://127.0.0.1:${port}/payments`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: JSON.stringify({ amount: 1_000 }),
    ...(signal ? { signal } : {}),
  });
}

/** Whether `m` reports the engine event `type` for `key`. */
function isEvent(m: AppMessage, key: string, type: string): boolean {
  const event = m.event as { key?: string; type?: string } | undefined;
  return m.type === 'event' && event?.key === key && event.type === type;
}

const eventsOf = (child: AppChild, key: string, type: string) => child.messages.filter((m) => isEvent(m, key, type));

describe('a client that hangs up on an app process on Redis', () => {
  const prefix = `idempo-hang-up:${randomUUID()}:`;
  let client: Redis;
  let app: AppChild | undefined;
  let privateRedis: RedisServer | undefined;

  beforeAll(() => {
    client = new Redis(REDIS);
  });

  afterEach(async () => {
    privateRedis?.resume();
    await app?.kill();
    app = undefined;
  });

  afterAll(async () => {
    const keys = await client.keys(`${prefix}*`);
    if (keys.length) await client.unlink(...keys);
    await client.quit();
    await privateRedis?.stop();
  });

  it('while ctx.step works: the step runs once, its save is kept past several leases, and the retry replays it', async () => {
    app = startApp('serve', { redis: REDIS, prefix, name: 'A', lease: LEASE_MS, blockInStep: true, respond: 'status' });
    const child = app;
    const { port } = (await child.waitFor((m) => m.type === 'listening')) as unknown as { port: number };
    const key = `pay-${randomUUID()}`;

    const controller = new AbortController();
    const gone = postAbortable(port, key, controller.signal).then(
      () => 'answered',
      () => 'aborted',
    );
    // The step's side effect is under way, its result not saved yet: the client hangs up.
    await child.waitFor((m) => m.type === 'step' && m.key === key);
    controller.abort();
    expect(await gone).toBe('aborted');

    // Two and a half leases later the key is still in flight: renewed while the handler works.
    await sleep(2.5 * LEASE_MS);
    const meanwhile = await postAbortable(port, key, AbortSignal.timeout(5_000));
    expect(meanwhile.status).toBe(409);
    expect(await meanwhile.json()).toMatchObject({ status: 409, code: 'IDEMPO_CONFLICT' });

    // The side effect ends: its save is accepted and the response stored, though nobody listens.
    child.go();
    await child.waitFor((m) => isEvent(m, key, 'executed'));
    const retry = await postAbortable(port, key, AbortSignal.timeout(5_000));
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await retry.json()).toMatchObject({
      owner: 'A',
      charge: { id: `ch_A_${child.process.pid}` },
      recovered: false,
    });

    // One run of the handler, one run of the step; nothing lost, released or taken over.
    expect(child.messages.filter((m) => m.type === 'step' && m.key === key)).toHaveLength(1);
    expect(child.messages.filter((m) => m.type === 'started' && m.key === key)).toHaveLength(1);
    for (const type of ['lease_lost', 'released', 'recovered']) expect(eventsOf(child, key, type)).toEqual([]);
  });

  it('while its claim waits on a stopped Redis: the key is released once the claim lands, nothing runs, and the retry runs', async () => {
    privateRedis = await startRedisServer();
    const redis = privateRedis;
    // A 60 s lease: a key pinned by the hang-up would answer 409 to every retry below.
    app = startApp('serve', { redis: { host: redis.host, port: redis.port }, prefix, name: 'B', lease: '60s' });
    const child = app;
    const { port } = (await child.waitFor((m) => m.type === 'listening')) as unknown as { port: number };
    const key = `early-${randomUUID()}`;

    redis.pause();
    const controller = new AbortController();
    const gone = postAbortable(port, key, controller.signal).then(
      () => 'answered',
      () => 'aborted',
    );
    await sleep(200); // the claim is on its way to the stopped Redis
    controller.abort();
    expect(await gone).toBe('aborted');
    await sleep(100); // the app sees the connection close while its claim still waits
    redis.resume();

    await child.waitFor((m) => isEvent(m, key, 'released'));
    expect(child.messages.filter((m) => m.type === 'started' && m.key === key)).toHaveLength(0);

    const retry = await postAbortable(port, key, AbortSignal.timeout(5_000));
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(await retry.json()).toMatchObject({ owner: 'B' });
    expect(child.messages.filter((m) => m.type === 'started' && m.key === key)).toHaveLength(1);
    const replay = await postAbortable(port, key, AbortSignal.timeout(5_000));
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
  });
});
