// synchronousCommit on a real primary with a real streaming standby (pg_basebackup -R), made
// synchronous with synchronous_standby_names: a commit that waits for the standby cannot return
// while the standby is down, and a key that returned is on the standby when it is promoted.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresStore } from '../../src/stores/postgres.js';
import {
  makeSynchronous,
  type PostgresCluster,
  type PostgresStandby,
  startPostgresCluster,
  startStandby,
} from '../helpers/postgres-cluster.js';

const DAY = 86_400_000;
const claimInput = (key: string) => ({ key, fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });

function pending<T>(promise: Promise<T>, ms: number): Promise<'pending' | T> {
  return Promise.race([promise, new Promise<'pending'>((resolve) => setTimeout(() => resolve('pending'), ms))]);
}

describe('postgres store synchronousCommit with a synchronous streaming standby', () => {
  let primary: PostgresCluster;
  let standby: PostgresStandby;
  const pools: pg.Pool[] = [];

  function poolOf(cluster: PostgresCluster, max = 4): pg.Pool {
    const pool = new pg.Pool({ ...cluster.connection, max });
    pool.on('error', () => {});
    pools.push(pool);
    return pool;
  }

  beforeAll(async () => {
    primary = await startPostgresCluster();
    await createPostgresStore({ pool: poolOf(primary) }).migrate();
    standby = await startStandby(primary);
    await makeSynchronous(primary, standby);
  }, 120_000);

  afterAll(async () => {
    await Promise.all(pools.map((pool) => pool.end().catch(() => {})));
    await standby?.destroy();
    await primary?.destroy();
  });

  it("with 'remote_apply' a claim returns only once the standby shows it", async () => {
    const store = createPostgresStore({ pool: poolOf(primary), synchronousCommit: 'remote_apply' });
    const onStandby = poolOf(standby);
    for (let i = 0; i < 20; i++) {
      const key = `apply:${randomUUID()}`;
      expect((await store.claim(claimInput(key))).status).toBe('acquired');
      const { rowCount } = await onStandby.query('SELECT 1 FROM idempo_keys WHERE key = $1', [key]);
      expect(rowCount).toBe(1);
    }
  });

  it("with the standby down, an 'on' claim waits for it and a 'local' one does not; the waiting one lands when it is back", async () => {
    const waiting = createPostgresStore({ pool: poolOf(primary), synchronousCommit: 'on' });
    const local = createPostgresStore({ pool: poolOf(primary), synchronousCommit: 'local' });
    await standby.stop('immediate');
    try {
      const held = waiting.claim(claimInput(`held:${randomUUID()}`));
      expect(await pending(held, 1_500)).toBe('pending');
      const free = await pending(local.claim(claimInput(`free:${randomUUID()}`)), 1_500);
      expect(free).toMatchObject({ status: 'acquired' });
      await standby.start();
      expect(await pending(held, 20_000)).toMatchObject({ status: 'acquired' });
    } finally {
      if (!standby.running) await standby.start();
    }
  }, 60_000);

  it('leaves the pool’s connections as it found them: the setting lasts one statement', async () => {
    const pool = poolOf(primary, 1);
    const store = createPostgresStore({ pool, synchronousCommit: 'off' });
    const key = `leak:${randomUUID()}`;
    const claimed = await store.claim(claimInput(key));
    if (claimed.status !== 'acquired') throw new Error(claimed.status);
    expect(await store.complete(key, claimed.token, { status: 200, headers: [], body: new Uint8Array() }, DAY)).toBe(
      'ok',
    );
    const { rows } = await pool.query('SHOW synchronous_commit');
    expect(rows[0].synchronous_commit).toBe('on');
  });

  it('rejects a level PostgreSQL does not have', () => {
    expect(() =>
      createPostgresStore({ pool: poolOf(primary), synchronousCommit: 'remote' as unknown as 'on' }),
    ).toThrow(/synchronousCommit/);
  });

  // Last: it promotes the standby, so the primary is gone afterwards.
  it('after the primary crashes and the standby is promoted, every completed key replays and every claimed key is held', async () => {
    const store = createPostgresStore({ pool: poolOf(primary), synchronousCommit: 'on' });
    const completed: string[] = [];
    const claimed: string[] = [];
    for (let i = 0; i < 30; i++) {
      const key = `promote:${i}:${randomUUID()}`;
      const claim = await store.claim(claimInput(key));
      if (claim.status !== 'acquired') throw new Error(claim.status);
      if (i % 2 === 0) {
        await store.complete(key, claim.token, { status: 201, headers: [], body: new TextEncoder().encode(key) }, DAY);
        completed.push(key);
      } else claimed.push(key);
    }
    await primary.stop('immediate');
    await standby.promote();
    const promoted = createPostgresStore({ pool: poolOf(standby) });
    for (const key of completed) {
      const again = await promoted.claim(claimInput(key));
      expect(again.status).toBe('replay');
    }
    for (const key of claimed) {
      const again = await promoted.claim(claimInput(key));
      expect(again.status).toBe('in_flight');
    }
  }, 60_000);
});
