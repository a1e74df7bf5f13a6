import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { type ReadTransactional, readBatch } from './sqlite-read-batch.js';

interface Db extends ReadTransactional {
  exec(sql: string): void;
  prepare(sql: string): { get(...params: unknown[]): unknown; run(...params: unknown[]): unknown };
  inTransaction: boolean;
}
const Database = createRequire(import.meta.url)('better-sqlite3') as new (path: string) => Db;

/** A real database whose transactions are counted as they start. */
function countedDb(): { db: Db; transactions: () => number } {
  const db = new Database(':memory:');
  db.exec('CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT)');
  db.prepare("INSERT INTO t VALUES ('a', 'A'), ('b', 'B')").run();
  let count = 0;
  const transaction = db.transaction.bind(db);
  db.transaction = ((fn: (...args: never[]) => unknown) => {
    const wrapped = transaction(fn);
    return (...args: never[]) => {
      count++;
      return wrapped(...args);
    };
  }) as Db['transaction'];
  return { db, transactions: () => count };
}

describe('readBatch', () => {
  it('reads everything one turn of the event loop issues in one transaction, then runs afterBatch once', async () => {
    const { db, transactions } = countedDb();
    const select = db.prepare('SELECT v FROM t WHERE k = ?');
    const events: string[] = [];
    const get = readBatch(db, {
      read: (key: string) => {
        expect(db.inTransaction).toBe(true);
        return (select.get(key) as { v: string } | undefined)?.v;
      },
      answer: (key, value) => {
        expect(db.inTransaction).toBe(false);
        events.push(`answer ${key}`);
        return value ?? 'absent';
      },
      afterBatch: () => events.push('after'),
    });
    const first = await Promise.all([get('a'), get('b'), get('c')]);
    expect(first).toEqual(['A', 'B', 'absent']);
    expect(transactions()).toBe(1);
    expect(events).toEqual(['answer a', 'answer b', 'answer c', 'after']);
    expect(await get('a')).toBe('A');
    expect(transactions()).toBe(2);
  });

  it('answers with the promise answer returns, so a queued write can answer the caller', async () => {
    const { db } = countedDb();
    let release: (value: string) => void = () => {};
    const get = readBatch(db, {
      read: () => undefined,
      answer: () => new Promise<string>((resolve) => (release = resolve)),
      afterBatch: () => release('written'),
    });
    expect(await get('x')).toBe('written');
  });

  it('fails the whole batch when its read fails, and goes on with the next one', async () => {
    const { db } = countedDb();
    const select = db.prepare('SELECT v FROM t WHERE k = ?');
    let broken = true;
    const get = readBatch(db, {
      read: (key: string) => {
        if (broken) throw new Error('disk I/O error');
        return (select.get(key) as { v: string }).v;
      },
      answer: (_key, value) => value,
      afterBatch: () => {},
    });
    const failed = await Promise.allSettled([get('a'), get('b')]);
    expect(failed.map((r) => r.status)).toEqual(['rejected', 'rejected']);
    expect((failed[0] as PromiseRejectedResult).reason).toMatchObject({ message: 'disk I/O error' });
    broken = false;
    expect(await get('b')).toBe('B');
  });

  it('fails only the item whose answer throws', async () => {
    const { db } = countedDb();
    let after = 0;
    const get = readBatch(db, {
      read: (key: string) => key,
      answer: (key) => {
        if (key === 'bad') throw new Error('bad row');
        return key.toUpperCase();
      },
      afterBatch: () => after++,
    });
    const settled = await Promise.allSettled([get('a'), get('bad'), get('b')]);
    expect(settled.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message))).toEqual([
      'A',
      'bad row',
      'B',
    ]);
    expect(after).toBe(1);
  });
});
