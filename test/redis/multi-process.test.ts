/**
 * Four app processes, fifty concurrent requests each, the same ten keys: every key runs exactly
 * once, on standalone Redis and on a three-master Cluster. Duplicates use `concurrent: 'wait'`, so
 * every one of the 200 responses is the single execution's response, woken over pub/sub across
 * processes.
 */
import { randomUUID } from 'node:crypto';
import { Cluster, Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RedisCluster, startRedisCluster } from '../helpers/redis-cluster.js';
import { type AppChild, type AppConfig, type AppMessage, startApp } from './child.js';

const PROCESSES = 4;
const REQUESTS_PER_PROCESS = 50;
const KEYS = 10;

interface Result {
  key: string;
  status: number;
  body: string;
  replayed: boolean;
}

async function runLoad(connection: Pick<AppConfig, 'redis' | 'cluster'>, counter: Redis | Cluster) {
  const prefix = `idempo-mp:${randomUUID()}:`;
  const keys = Array.from({ length: KEYS }, (_, i) => `order-${i}-${randomUUID()}`);
  const apps: AppChild[] = [];
  try {
    for (let i = 0; i < PROCESSES; i++) {
      apps.push(
        startApp('load', {
          ...connection,
          prefix,
          keys,
          requests: REQUESTS_PER_PROCESS,
          concurrent: 'wait',
          waitTimeout: '15s',
          lease: '10s',
          handlerMs: 100,
        }),
      );
    }
    await Promise.all(apps.map((app) => app.waitFor((m) => m.type === 'ready', 15_000)));
    for (const app of apps) app.go();
    const reports = await Promise.all(apps.map((app) => app.waitFor((m) => m.type === 'results', 25_000)));
    const results = reports.flatMap((r: AppMessage) => r.results as Result[]);
    const executions = reports.reduce((n, r) => n + (r.executions as number), 0);
    const counts = await Promise.all(keys.map((key) => counter.get(`${prefix}executions:${key}`)));
    await Promise.all(keys.map((key) => counter.del(`${prefix}executions:${key}`)));
    return { prefix, keys, results, executions, counts };
  } finally {
    await Promise.all(apps.map((app) => app.kill()));
  }
}

function expectExactlyOnce({ keys, results, executions, counts }: Awaited<ReturnType<typeof runLoad>>): void {
  expect(results).toHaveLength(PROCESSES * REQUESTS_PER_PROCESS);
  expect(counts).toEqual(keys.map(() => '1'));
  expect(executions).toBe(KEYS);
  for (const key of keys) {
    const forKey = results.filter((r) => r.key === key);
    expect(forKey).toHaveLength((PROCESSES * REQUESTS_PER_PROCESS) / KEYS);
    expect(new Set(forKey.map((r) => r.status))).toEqual(new Set([201]));
    expect(new Set(forKey.map((r) => r.body)).size).toBe(1);
    expect(forKey.filter((r) => !r.replayed)).toHaveLength(1);
  }
}

describe('4 processes × 50 concurrent requests on the same keys', () => {
  let cluster: RedisCluster;
  let standalone: Redis;
  let clusterClient: Cluster;

  beforeAll(async () => {
    standalone = new Redis({ host: '127.0.0.1', port: 6379 });
    cluster = await startRedisCluster({ masters: 3 });
    clusterClient = new Cluster(cluster.nodes);
  });

  afterAll(async () => {
    await standalone?.quit();
    await clusterClient?.quit();
    await cluster?.stop();
  });

  it('runs every key exactly once on standalone Redis', async () => {
    const run = await runLoad({ redis: { host: '127.0.0.1', port: 6379 } }, standalone);
    expectExactlyOnce(run);
    let cursor = '0';
    do {
      const [next, found] = await standalone.scan(cursor, 'MATCH', `${run.prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (found.length) await standalone.unlink(...found);
    } while (cursor !== '0');
  });

  it('runs every key exactly once on a three-master Cluster', async () => {
    expectExactlyOnce(await runLoad({ cluster: cluster.nodes }, clusterClient));
  });
});
