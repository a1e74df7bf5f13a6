/**
 * Store outage: a private redis-server (AOF, fsync always, so records survive) is killed in the
 * middle of a load. Every request during the outage gets 503 and runs nothing; a request whose
 * handler ran while the server was down gets its result stored once the server is back (within
 * its lease and `completeTimeout`), never a success that no retry replays, and runs once; when
 * the server comes back on the same port the same app serves again, and no key stays stuck past
 * its lease.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotent } from '../../src/adapters/node.js';
import type { IdempotencyEvent } from '../../src/engine/types.js';
import { createIdempotency } from '../../src/index.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-cluster.js';

/** Longer than the outage (about a second): the held completion is stored before the lease can pass. */
const LEASE_MS = 3_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Sent {
  id: string;
  key: string;
  start: number;
  end: number;
  status: number;
  retryAfter: string | null;
  replayed: boolean;
  body: string;
}

describe('a Redis outage in the middle of a load', () => {
  let server: RedisServer;
  let client: Redis;
  let http: Server;
  let base: string;
  const executed = new Map<string, number>(); // request id → when its handler ran
  const runsPerKey = new Map<string, number>();
  const events: IdempotencyEvent[] = [];

  beforeAll(async () => {
    server = await startRedisServer({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] });
    // The fail-fast settings the store's docs recommend.
    client = new Redis({
      host: server.host,
      port: server.port,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectTimeout: 500,
      commandTimeout: 1_000,
      retryStrategy: (attempt) => Math.min(attempt * 50, 200),
      lazyConnect: true,
    });
    client.on('error', () => {});
    await client.connect();
    const idem = createIdempotency({
      store: createRedisStore({ client }),
      lease: LEASE_MS,
      ttl: '60s',
      onEvent: (event) => events.push(event),
    });
    http = createServer(
      idempotent(idem, async (req, res) => {
        const key = String(req.headers['idempotency-key']);
        executed.set(String(req.headers['x-request-id']), Date.now());
        runsPerKey.set(key, (runsPerKey.get(key) ?? 0) + 1);
        await sleep(Number(req.headers['x-work-ms'] ?? 10));
        res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ key }));
      }),
    );
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    http?.close();
    client?.disconnect();
    await server?.stop();
  });

  let nextId = 0;
  async function send(key: string, workMs = 10): Promise<Sent> {
    const id = String(nextId++);
    const start = Date.now();
    let response: Response;
    let text: string;
    try {
      response = await fetch(`${base}/orders`, {
        method: 'POST',
        headers: { 'idempotency-key': key, 'x-request-id': id, 'x-work-ms': String(workMs) },
        body: JSON.stringify({ key }),
      });
      text = await response.text();
    } catch {
      // The server cut the response: a head already written whose result idempo could not confirm.
      return { body: '', id, key, start, end: Date.now(), status: 0, retryAfter: null, replayed: false };
    }
    return {
      body: text,
      id,
      key,
      start,
      end: Date.now(),
      status: response.status,
      retryAfter: response.headers.get('retry-after'),
      replayed: response.headers.get('idempotent-replayed') === 'true',
    };
  }

  it('answers 503 and runs nothing while Redis is down, then serves again with no key stuck past its lease', async () => {
    const sent: Sent[] = [];
    let stop = false;
    // An open load: each loop sends every 20 ms without waiting for answers, since a request whose
    // completion meets the outage is held until Redis is back and must not hold the load up.
    const loops = Array.from({ length: 4 }, async (_, loop) => {
      const answered: string[] = [];
      const pending: Promise<void>[] = [];
      for (let i = 0; !stop; i++) {
        // Every third request retries the loop's last answered key: replays mix with first requests.
        const key = i % 3 === 2 && answered.length > 0 ? (answered.at(-1) as string) : `load-${loop}-${i}`;
        pending.push(
          send(key).then((s) => {
            sent.push(s);
            answered.push(key);
          }),
        );
        await sleep(20);
      }
      await Promise.all(pending);
    });

    await sleep(400);
    // A slow request is mid-handler when Redis dies: its claim is on disk, its completion is lost.
    const slow = send('slow', 600);
    while (!runsPerKey.has('slow')) await sleep(5);
    const killAt = Date.now();
    await server.kill();
    const downAt = Date.now();
    await sleep(800);
    const upAt = Date.now();
    await server.restart();
    while (client.status !== 'ready') await sleep(10);
    const readyAt = Date.now();
    await sleep(600);
    stop = true;
    await Promise.all(loops);
    // Its handler finished while Redis was down: the completion was retried, response held, until Redis came back.
    const slowAnswer = await slow;
    expect(slowAnswer.status).toBe(201);
    expect(slowAnswer.replayed).toBe(false);
    expect(events.some((e) => e.type === 'store_error' && e.reason === 'complete' && e.action === 'retrying')).toBe(
      true,
    );

    const duringOutage = sent.filter((s) => s.start > downAt && s.end < upAt);
    expect(duringOutage.length).toBeGreaterThan(10);
    for (const s of duringOutage) {
      expect(s.status).toBe(503);
      expect(Number(s.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(executed.has(s.id)).toBe(false);
    }
    expect(events.some((e) => e.type === 'store_error' && e.action === 'fail-closed')).toBe(true);

    // A cut response is only ever one the outage caught mid-flight (its head written, its completion
    // unconfirmed); what it ran is checked with every key below.
    expect(sent.filter((s) => s.status === 0 && (s.start > upAt || s.end < killAt))).toEqual([]);

    const afterRecovery = sent.filter((s) => s.start > readyAt);
    expect(afterRecovery.length).toBeGreaterThan(10);
    for (const s of afterRecovery) expect(s.status).toBe(201);

    // The slow key's success was stored: its retry replays it, and it never runs again.
    const replayed = await send('slow');
    expect(replayed).toMatchObject({ status: 201, replayed: true, body: slowAnswer.body });
    expect(runsPerKey.get('slow')).toBe(1);
    expect(events.some((e) => e.type === 'recovered' && e.key === 'slow')).toBe(false);

    // Every key of the run is settled once its lease has passed (a claim Redis kept but whose reply
    // was lost holds its key that long): a retry replays or runs; none is held or failing.
    await sleep(LEASE_MS + 200);
    const keys = [...new Set(sent.map((s) => s.key))];
    const retries = await Promise.all(keys.map((key) => send(key)));
    expect(retries.filter((r) => r.status !== 201)).toEqual([]);
    // Every success a client got was stored first (the adapter holds end() until then, across the
    // outage too): its retry replays it, and its handler ran once.
    const succeeded = new Set(sent.filter((s) => s.status === 201 && !s.replayed).map((s) => s.key));
    const completedBefore = sent.filter((s) => s.status === 201 && s.end < killAt);
    expect(completedBefore.length).toBeGreaterThan(0);
    expect(succeeded.size).toBeGreaterThan(completedBefore.length);
    for (const r of retries) {
      if (!succeeded.has(r.key)) continue;
      expect(r.replayed, r.key).toBe(true);
      expect(runsPerKey.get(r.key), r.key).toBe(1);
    }
    // No key ran twice: nothing failed after its handler ran without the key being kept.
    expect([...runsPerKey].filter(([, runs]) => runs > 1)).toEqual([]);
  });
});
