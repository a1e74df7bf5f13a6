// ctx.transaction fencing across processes: an owner frozen with SIGSTOP past its lease loses the
// key to a second process, which runs the order and answers. Thawed, the first owner's
// transaction is refused by the fence and rolled back, its INSERT with it, and its own caller gets
// `409 IDEMPO_LEASE_LOST`; retries to either process replay the second owner's answer.
//
// PostgreSQL: A is frozen inside its transaction, after its INSERT (the row is written but not
// committed; the record's row is not locked yet, so B's claim does not wait on A).
// SQLite: A is frozen just before its transaction: inside one it would hold the database's write
// lock, and no other process could take the key over until it went on (B would wait, then fail
// with 503); thawed, it runs the transaction, INSERT included, and the fence rolls it back.
//
// Needs `npm run build` first: the apps run on dist/.
import { randomUUID } from 'node:crypto';
import { afterAll, expect, it } from 'vitest';
import { type App, order, postgresDatabase, sqliteDatabase, startApp, type TestDatabase } from './harness.js';

const apps: App[] = [];
const databases: TestDatabase[] = [];

afterAll(async () => {
  for (const app of apps) app.kill('SIGKILL');
  await Promise.all(apps.map((app) => app.exited));
  for (const database of databases) await database.close();
});

const cases = [
  ['postgres', 'inside its transaction, after the INSERT', 'stall-after-effect', postgresDatabase],
  ['sqlite', 'just before its transaction', 'stall-before-transaction', async () => sqliteDatabase()],
] as const;

it.each(cases)(
  '%s: an owner frozen %s past its lease: its transaction is rolled back and its caller gets 409 IDEMPO_LEASE_LOST',
  async (_kind, _where, point, open) => {
    const database = await open();
    databases.push(database);
    const a = await startApp(database, 'a', point);
    const b = await startApp(database, 'b');
    apps.push(a, b);
    const key = randomUUID();

    const first = order(a, key);
    await a.reached(point);
    a.kill('SIGSTOP');
    try {
      // Frozen, A cannot renew: wait, by the store's clock, until its lease has passed.
      await expect.poll(() => database.leasePassed(key), { timeout: 10_000, interval: 100 }).toBe(true);
      const second = await order(b, key);
      expect(second.status).toBe(201);
      expect(second.replayed).toBe(false);
      expect(second.json).toMatchObject({ order: { writtenBy: 'b' }, recovered: true });
    } finally {
      a.kill('SIGCONT');
    }

    // A goes on: its transaction reaches the fence, is refused and rolled back, and A's caller is told.
    const lost = await first;
    expect(lost.status).toBe(409);
    expect(lost.json).toMatchObject({ code: 'IDEMPO_LEASE_LOST' });
    const rows = await database.orders(key);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.server).toBe('b');

    // Retries, to either process, replay B's answer.
    const fromA = await order(a, key);
    const fromB = await order(b, key);
    expect(fromA).toMatchObject({ status: 201, replayed: true });
    expect(fromA.body).toBe(fromB.body);
    expect(fromA.json).toMatchObject({ order: { rowId: rows[0]?.id, writtenBy: 'b' } });
    expect(await database.orders(key)).toEqual(rows);
  },
);
