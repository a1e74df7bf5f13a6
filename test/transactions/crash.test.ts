// ctx.transaction across real crashes: an app process inserts one order row in ctx.transaction
// (on PostgreSQL, or SQLite with the store on the same file) and is killed with SIGKILL at one
// point of the request; a fresh process then gets the retry. Whatever the point, the order table
// ends with exactly one row for the key, and the retry's answer carries that row. The table has
// no unique constraint, so a second run of the effect would show as a second row.
//
// Needs `npm run build` first: the apps run on dist/.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type App,
  order,
  orderUntilDone,
  postgresDatabase,
  sqliteDatabase,
  startApp,
  type TestDatabase,
} from './harness.js';

const kinds = [
  ['postgres', postgresDatabase],
  ['sqlite', async () => sqliteDatabase()],
] as const;

describe.each(kinds)('%s: a process killed with SIGKILL at each point of a transactional request', (_kind, open) => {
  let database: TestDatabase;
  const apps: App[] = [];

  beforeAll(async () => {
    database = await open();
  });

  afterAll(async () => {
    for (const app of apps) app.kill('SIGKILL');
    await Promise.all(apps.map((app) => app.exited));
    await database?.close();
  });

  /** Starts an app that stops at `point`, sends it `key`, kills it there, and returns what the first request saw. */
  async function crashAt(point: string, key: string): Promise<void> {
    const first = await startApp(database, 'a', point);
    apps.push(first);
    const request = order(first, key).catch((error: unknown) => error);
    await first.reached(point);
    first.kill('SIGKILL');
    await first.exited;
    // The client of the killed process never got an answer.
    expect(await request).toBeInstanceOf(Error);
  }

  /** A fresh process takes the retry, after the dead owner's lease; a second retry replays its answer byte for byte. */
  async function retry(key: string) {
    const second = await startApp(database, 'b');
    apps.push(second);
    const answer = await orderUntilDone(second, key);
    expect(answer.status).toBe(201);
    const again = await order(second, key);
    expect(again.status).toBe(201);
    expect(again.replayed).toBe(true);
    expect(again.body).toBe(answer.body);
    return answer;
  }

  it('before the effect: nothing committed; the retry runs the effect, once', async () => {
    const key = randomUUID();
    await crashAt('before-effect', key);
    expect(await database.orders(key)).toEqual([]);
    const answer = await retry(key);
    const rows = await database.orders(key);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.server).toBe('b');
    expect(answer.json).toMatchObject({ order: { rowId: rows[0]?.id, writtenBy: 'b' }, recovered: true });
  });

  it('after the effect, before the commit: the effect is rolled back with the step; the retry runs it, once', async () => {
    const key = randomUUID();
    await crashAt('after-effect', key);
    // The killed process's transaction never committed (PostgreSQL aborts it when the connection
    // drops; SQLite ignores WAL frames without a commit).
    expect(await database.orders(key)).toEqual([]);
    const answer = await retry(key);
    const rows = await database.orders(key);
    expect(rows).toHaveLength(1);
    expect(rows[0]?.server).toBe('b');
    expect(answer.json).toMatchObject({ order: { rowId: rows[0]?.id, writtenBy: 'b' }, recovered: true });
  });

  it('after the commit, before the completion: the retry gets the committed result back and runs nothing', async () => {
    const key = randomUUID();
    await crashAt('after-commit', key);
    const committed = await database.orders(key);
    expect(committed).toHaveLength(1);
    expect(committed[0]?.server).toBe('a');
    const answer = await retry(key);
    // Still the one row the killed process committed: the retry answered from the stored step.
    expect(await database.orders(key)).toEqual(committed);
    expect(answer.json).toMatchObject({
      order: { rowId: committed[0]?.id, writtenBy: 'a' },
      answeredBy: 'b',
      recovered: true,
    });
  });

  it('after the completion, before the response was sent: the retry replays the stored response', async () => {
    const key = randomUUID();
    await crashAt('after-complete', key);
    const committed = await database.orders(key);
    expect(committed).toHaveLength(1);
    const second = await startApp(database, 'b');
    apps.push(second);
    // Completed: no lease to wait for, the replay comes at once and names the killed process.
    const answer = await order(second, key);
    expect(answer.status).toBe(201);
    expect(answer.replayed).toBe(true);
    expect(answer.json).toMatchObject({ order: { rowId: committed[0]?.id, writtenBy: 'a' }, answeredBy: 'a' });
    expect(await database.orders(key)).toEqual(committed);
  });
});
