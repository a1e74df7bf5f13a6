/**
 * The store really stopped at the moment of completion: a private redis-server (no persistence)
 * that the handler itself freezes with SIGSTOP once its work is done, so the completion meets a
 * store that does not answer. idempo retries the completion with the response held:
 * - the store back within `completeTimeout`: the caller gets its success, the retry replays it,
 *   and the handler ran once;
 * - the store still stopped: the caller gets `503 IDEMPO_RESULT_NOT_STORED`, never the success
 *   no retry could replay, and while the lease holds retries get 409 or 503 and run nothing.
 */
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { idempotent } from '../../src/adapters/node.js';
import type { IdempotencyEvent, IdempotencyOptions } from '../../src/engine/types.js';
import { createIdempotency } from '../../src/index.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-cluster.js';

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe('a Redis stopped (SIGSTOP) by the handler just before its completion', () => {
  let redis: RedisServer;
  let pid: number;
  let client: Redis;
  let http: Server | undefined;
  let resume: ReturnType<typeof setTimeout> | undefined;

  beforeAll(async () => {
    redis = await startRedisServer();
    // Fail-fast settings: a stopped server keeps its socket open, so only a command timeout ends a call.
    client = new Redis({
      host: redis.host,
      port: redis.port,
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: 500,
      commandTimeout: 200,
      lazyConnect: true,
    });
    client.on('error', () => {});
    await client.connect();
    const info = await client.info('server');
    pid = Number(/process_id:(\d+)/.exec(info)?.[1]);
    expect(pid).toBeGreaterThan(0);
  });

  afterEach(async () => {
    clearTimeout(resume);
    process.kill(pid, 'SIGCONT');
    if (http) {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http?.close(() => resolve()));
      http = undefined;
    }
  });

  afterAll(async () => {
    client?.disconnect();
    await redis?.stop();
  });

  /** A node:http app on the private Redis whose handler does its work, then freezes Redis (and thaws it after `thawAfterMs`). */
  async function app(options: Partial<IdempotencyOptions>, thawAfterMs: number | undefined) {
    const events: IdempotencyEvent[] = [];
    const runs = new Map<string, number>();
    const idem = createIdempotency({
      store: createRedisStore({ client, prefix: `stopped:${randomUUID()}:` }),
      ttl: '60s',
      ...options,
      onEvent: (event) => events.push(event),
    });
    http = createServer(
      idempotent(idem, async (req, res) => {
        for await (const _chunk of req);
        const key = String(req.headers['idempotency-key']);
        runs.set(key, (runs.get(key) ?? 0) + 1);
        // The work is done; the store stops before idempo can record it.
        process.kill(pid, 'SIGSTOP');
        if (thawAfterMs !== undefined) resume = setTimeout(() => process.kill(pid, 'SIGCONT'), thawAfterMs);
        res.statusCode = 201;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ order: randomUUID() }));
      }),
    );
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    const url = `http://127.0.0.1:${(http.address() as AddressInfo).port}/orders`;
    const send = async (key: string) => {
      const response = await fetch(url, {
        method: 'POST',
        headers: { 'idempotency-key': key, 'content-type': 'application/json' },
        body: '{"amount":100}',
      });
      return {
        status: response.status,
        replayed: response.headers.get('idempotent-replayed') === 'true',
        retryAfter: response.headers.get('retry-after'),
        body: await response.text(),
      };
    };
    return { send, runs, events };
  }

  it('back within completeTimeout: the caller gets its success, the retry replays it, one execution', async () => {
    const { send, runs, events } = await app({ lease: '3s', completeTimeout: '2s' }, 600);
    const key = `order-${randomUUID()}`;
    const first = await send(key);
    expect(first, first.body).toMatchObject({ status: 201 });
    expect(first.replayed).toBe(false);
    expect(JSON.parse(first.body)).toHaveProperty('order');
    // The completion did meet the stopped store: it was retried, not stored at the first try.
    expect(events.some((e) => e.type === 'store_error' && e.reason === 'complete')).toBe(true);

    for (let i = 0; i < 2; i++) {
      const retry = await send(key);
      expect(retry).toMatchObject({ status: 201, replayed: true, body: first.body });
    }
    expect(runs.get(key)).toBe(1);
  });

  it('still stopped: the caller gets 503 IDEMPO_RESULT_NOT_STORED, and nothing runs again while the lease holds', async () => {
    const leaseMs = 2_000;
    const { send, runs } = await app({ lease: leaseMs, completeTimeout: 300 }, undefined);
    const key = `order-${randomUUID()}`;
    const sentAt = Date.now();
    const first = await send(key);
    expect(first.status).toBe(503);
    expect(first.replayed).toBe(false);
    expect(Number(first.retryAfter)).toBeGreaterThanOrEqual(1);
    expect(JSON.parse(first.body)).toMatchObject({ status: 503, code: 'IDEMPO_RESULT_NOT_STORED' });
    expect(JSON.parse(first.body)).not.toHaveProperty('order');

    // Retries while the lease still holds: refused (409 while the key is in flight, 503 while the
    // store does not answer), never run.
    const statuses: number[] = [];
    while (Date.now() < sentAt + leaseMs - 400) {
      const retry = await send(key);
      expect([409, 503]).toContain(retry.status);
      expect(retry.replayed).toBe(false);
      statuses.push(retry.status);
      await sleep(50);
    }
    expect(statuses.length).toBeGreaterThan(2);
    expect(runs.get(key)).toBe(1);
  });
});
