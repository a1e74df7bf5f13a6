/**
 * Round trips to Redis per request, through the engine and through the node:http adapter: a first
 * request costs two (claim, complete), a replay one, a duplicate refused while the first request
 * runs two (the plain claim, then the script that reads the lease). Counted with MONITOR
 * on a private redis-server, filtered to the app's own connection.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { idempotent } from '../../src/adapters/node.js';
import { createIdempotency, type Idempotency } from '../../src/index.js';
import { createRedisStore } from '../../src/stores/redis.js';
import { type RedisServer, startRedisServer } from '../helpers/redis-cluster.js';
import { type CommandWatch, watchCommands } from './monitor.js';

function order(key: string): Request {
  return new Request('http://api.test/orders', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{"sku":"A-1"}',
  });
}

describe('round trips to Redis per request', () => {
  let server: RedisServer;
  let admin: Redis;
  let client: Redis;
  let idem: Idempotency;
  let watch: CommandWatch;
  let http: Server;
  let base: string;

  beforeAll(async () => {
    server = await startRedisServer();
    admin = new Redis({ host: server.host, port: server.port });
    client = new Redis({ host: server.host, port: server.port });
    idem = createIdempotency({ store: createRedisStore({ client }) });
    // Warm up: the first use of each script on a connection sends EVAL (with the script) instead of EVALSHA.
    await idem.handle(order('warm-up'), () => new Response('ok', { status: 201 }));
    await idem.handle(order('warm-up'), () => new Response('ok', { status: 201 }));
    let done!: () => void;
    const running = idem.handle(
      order('warm-up-2'),
      () => new Promise<Response>((r) => (done = () => r(new Response()))),
    );
    await new Promise((resolve) => setTimeout(resolve, 50));
    await idem.handle(order('warm-up-2'), () => new Response());
    done();
    await running;
    watch = await watchCommands(admin, client);
    http = createServer(
      idempotent(idem, (_req, res) => {
        res.writeHead(201, { 'content-type': 'text/plain' }).end('created');
      }),
    );
    http.listen(0, '127.0.0.1');
    await once(http, 'listening');
    base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
  });

  afterAll(async () => {
    watch?.stop();
    http?.close();
    await admin?.quit();
    await client?.quit();
    await server?.stop();
  });

  it('idem.handle: two for a first request, one for a replay', async () => {
    const first = await watch.during(() => idem.handle(order('h-1'), () => new Response('ok', { status: 201 })));
    expect(first).toEqual(['set', 'evalsha']);
    const replay = await watch.during(async () => {
      const response = await idem.handle(order('h-1'), () => new Response('again', { status: 201 }));
      expect(response.headers.get('idempotent-replayed')).toBe('true');
    });
    expect(replay).toEqual(['set']);
  });

  it('a duplicate refused while the first still runs costs two: the plain claim, then the script that reads the lease', async () => {
    let release!: () => void;
    const running = idem.handle(order('h-2'), () => new Promise<Response>((r) => (release = () => r(new Response()))));
    await new Promise((resolve) => setTimeout(resolve, 50));
    const duplicate = await watch.during(async () => {
      expect((await idem.handle(order('h-2'), () => new Response())).status).toBe(409);
    });
    expect(duplicate).toEqual(['set', 'evalsha']);
    release();
    await running;
  });

  it('the node:http adapter: two for a first request, one for a replay', async () => {
    const send = () => fetch(`${base}/orders`, { method: 'POST', headers: { 'idempotency-key': 'n-1' }, body: '{}' });
    const first = await watch.during(async () => expect((await send()).status).toBe(201));
    expect(first).toEqual(['set', 'evalsha']);
    const replay = await watch.during(async () =>
      expect((await send()).headers.get('idempotent-replayed')).toBe('true'),
    );
    expect(replay).toEqual(['set']);
  });
});
