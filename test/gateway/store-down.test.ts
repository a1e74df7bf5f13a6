import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort as freeRedisPort, type RedisServer, startRedisServer } from '../helpers/redis-cluster.js';
import { postJson, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// A gateway really started before its Redis: it serves 503 and says so on /healthz, then works
// once a private redis-server comes up on the port it was given.
let upstream: Awaited<ReturnType<typeof startUpstream>>;
let redis: RedisServer | undefined;

beforeAll(async () => {
  upstream = await startUpstream((_req, res) => {
    res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ n: upstream.hits.length }));
  });
});

afterAll(async () => {
  await redis?.stop();
  await upstream.close();
});

async function healthOf(url: string) {
  const res = await fetch(`${url}/healthz`);
  return { status: res.status, body: (await res.json()) as { status: string; store: string } };
}

describe('idempo serve with its store down at start-up', () => {
  it('starts, answers 503 and /healthz 503 until Redis is up, then serves keyed requests once', async () => {
    const port = await freeRedisPort();
    const store = `redis://:s3cret@127.0.0.1:${port}`;
    const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', store]);
    try {
      const warning = gateway.logs.map((line) => JSON.parse(line)).find((entry) => entry.level === 40);
      expect(warning?.msg).toMatch(/unreachable/);
      expect(warning?.store).toBe(`redis://:***@127.0.0.1:${port}`);
      expect(gateway.logs.join('\n')).not.toContain('s3cret');

      const refused = await postJson(`${gateway.url}/pay`, { amount: 1 }, 'boot-1');
      expect(refused.status).toBe(503);
      expect(refused.headers.get('retry-after')).toBe('1');
      expect((await refused.json()).code).toBe('IDEMPO_STORE_UNAVAILABLE');
      expect(await healthOf(gateway.url)).toEqual({
        status: 503,
        body: { status: 'unavailable', store: 'unreachable' },
      });
      expect(upstream.hits).toHaveLength(0);

      redis = await startRedisServer({ port });
      let health = await healthOf(gateway.url);
      for (let i = 0; i < 50 && health.status !== 200; i++) {
        await sleep(100);
        health = await healthOf(gateway.url);
      }
      expect(health).toEqual({ status: 200, body: { status: 'ok', store: 'ok' } });

      const first = await postJson(`${gateway.url}/pay`, { amount: 1 }, 'boot-1');
      expect(first.status).toBe(201);
      const replay = await postJson(`${gateway.url}/pay`, { amount: 1 }, 'boot-1');
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe(await first.text());
      expect(upstream.hits).toHaveLength(1);
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }
  });
});
