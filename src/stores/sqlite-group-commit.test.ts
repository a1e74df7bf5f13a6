import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSqliteStore } from './sqlite.js';
import { groupCommit, type TransactionalDatabase } from './sqlite-group-commit.js';

interface Db {
  pragma(source: string, options?: { simple: boolean }): unknown;
  exec(source: string): unknown;
  prepare(source: string): {
    run(...params: unknown[]): { changes: number };
    get(...params: unknown[]): unknown;
    all(...params: unknown[]): unknown[];
  };
  transaction<T extends (...args: never[]) => unknown>(fn: T): T & { immediate: T };
  close(): void;
}
const Database = createRequire(import.meta.url)('better-sqlite3') as new (path: string) => Db;

const dir = mkdtempSync(join(tmpdir(), 'idempo-group-commit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function open(name: string): Db {
  const db = new Database(join(dir, name));
  db.pragma('journal_mode = WAL');
  db.pragma('busy_timeout = 0');
  db.exec('CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)');
  return db;
}

/** Frames in the WAL: each commit appends at least one, so N separate commits leave at least N. */
function walFrames(db: Db): number {
  const [row] = db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
  return row?.log ?? 0;
}

/** `db` for groupCommit, counting each attempt to begin a write transaction (`BEGIN IMMEDIATE`). */
function countingAttempts(db: Db): { counted: TransactionalDatabase; attempts: () => number } {
  let count = 0;
  const counted: TransactionalDatabase = {
    transaction<T extends (...args: never[]) => unknown>(fn: T) {
      const tx = db.transaction(fn);
      const immediate = ((...args: never[]) => {
        count++;
        return tx.immediate(...args);
      }) as T;
      return Object.assign(((...args: never[]) => tx(...args)) as T, { immediate });
    },
  };
  return { counted, attempts: () => count };
}

/**
 * A group commit whose attempts are counted, and one write queued on it while a second connection
 * holds the write lock. `release` lets the lock go, then checks the write committed.
 */
function writeBehindLock(name: string, key: string) {
  const db = open(name);
  const holder = open(name);
  const { counted, attempts } = countingAttempts(db);
  const writes = groupCommit(counted, { maxBatch: 128, busyTimeoutMs: 2000 });
  holder.exec('BEGIN IMMEDIATE');
  const written = writes.run(() => db.prepare('INSERT INTO t (k, v) VALUES (?, ?)').run(key, 1));
  return {
    writes,
    attempts,
    async release() {
      holder.exec('COMMIT');
      await written;
      expect(db.prepare('SELECT v FROM t WHERE k = ?').get(key)).toEqual({ v: 1 });
      holder.close();
      db.close();
    },
  };
}

describe('group commit', () => {
  it('commits the writes of one turn in one transaction', async () => {
    const db = open('one-turn.db');
    db.pragma('wal_checkpoint(TRUNCATE)');
    const writes = groupCommit(db, { maxBatch: 128, busyTimeoutMs: 1000 });
    const insert = db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    await Promise.all(Array.from({ length: 100 }, (_, i) => writes.run(() => insert.run(`a${i}`, i))));
    const together = walFrames(db);
    db.pragma('wal_checkpoint(TRUNCATE)');
    for (let i = 0; i < 100; i++) await writes.run(() => insert.run(`b${i}`, i));
    const apart = walFrames(db);
    expect(together).toBeLessThan(10);
    expect(apart).toBeGreaterThanOrEqual(100);
    expect((db.prepare('SELECT count(*) AS n FROM t').get() as { n: number }).n).toBe(200);
    db.close();
  });

  it('splits a turn of more writes than maxBatch into several transactions, in order', async () => {
    const db = open('max-batch.db');
    const writes = groupCommit(db, { maxBatch: 10, busyTimeoutMs: 1000 });
    const seen: number[] = [];
    const upsert = db.prepare('INSERT INTO t (k, v) VALUES (?, ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v');
    await Promise.all(
      Array.from({ length: 35 }, (_, i) =>
        writes.run(() => {
          seen.push(i);
          return upsert.run('last', i);
        }),
      ),
    );
    expect(seen).toEqual(Array.from({ length: 35 }, (_, i) => i));
    expect((db.prepare("SELECT v FROM t WHERE k = 'last'").get() as { v: number }).v).toBe(34);
    db.close();
  });

  it('fails only the write that throws; the others of its batch commit', async () => {
    const db = open('one-fails.db');
    const writes = groupCommit(db, { maxBatch: 128, busyTimeoutMs: 1000 });
    const insert = db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    insert.run('taken', 0);
    const results = await Promise.allSettled([
      writes.run(() => insert.run('x1', 1)),
      writes.run(() => insert.run('taken', 2)), // primary key conflict
      writes.run(() => insert.run('x2', 3)),
    ]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason.code)).toMatch(/^SQLITE_CONSTRAINT/);
    expect(db.prepare('SELECT k, v FROM t ORDER BY k').all()).toEqual([
      { k: 'taken', v: 0 },
      { k: 'x1', v: 1 },
      { k: 'x2', v: 3 },
    ]);
    db.close();
  });

  it('waits for another connection’s lock without blocking the event loop, then commits', async () => {
    const db = open('waits.db');
    const holder = open('waits.db');
    const writes = groupCommit(db, { maxBatch: 128, busyTimeoutMs: 2000 });
    holder.exec('BEGIN IMMEDIATE');
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    const written = writes.run(() => db.prepare('INSERT INTO t (k, v) VALUES (?, ?)').run('late', 1));
    setTimeout(() => holder.exec('COMMIT'), 200);
    await written;
    clearInterval(ticker);
    expect(ticks).toBeGreaterThanOrEqual(10);
    expect(db.prepare("SELECT v FROM t WHERE k = 'late'").get()).toEqual({ v: 1 });
    holder.close();
    db.close();
  });

  it('keeps its backoff while another connection holds the lock: commitQueued waits for the retry', async () => {
    const held = writeBehindLock('backoff.db', 'kept');
    await new Promise((resolve) => setTimeout(resolve, 30));
    const waited = held.attempts();
    expect(waited).toBeGreaterThanOrEqual(1);
    for (let i = 0; i < 50; i++) held.writes.commitQueued();
    expect(held.attempts()).toBe(waited);
    await held.release();
  });

  it('drops the flush scheduled for the turn when it runs early, so a lock wait keeps its pause', async () => {
    const held = writeBehindLock('early.db', 'early');
    // Run before the turn ends: busy, so the write now waits a pause on a timer.
    held.writes.flush();
    expect(held.attempts()).toBe(1);
    // The flush run() scheduled for the end of the turn would try again at once.
    await new Promise((resolve) => setImmediate(resolve));
    expect(held.attempts()).toBe(1);
    await held.release();
  });

  it('fails with SQLITE_BUSY past the busy timeout, having written nothing', async () => {
    const db = open('gives-up.db');
    const holder = open('gives-up.db');
    const writes = groupCommit(db, { maxBatch: 128, busyTimeoutMs: 60 });
    holder.exec('BEGIN IMMEDIATE');
    const insert = db.prepare('INSERT INTO t (k, v) VALUES (?, ?)');
    const results = await Promise.allSettled([
      writes.run(() => insert.run('n1', 1)),
      writes.run(() => insert.run('n2', 2)),
    ]);
    holder.exec('COMMIT');
    for (const result of results) {
      expect(result.status).toBe('rejected');
      expect(String((result as PromiseRejectedResult).reason.code)).toMatch(/^SQLITE_BUSY/);
    }
    expect(db.prepare('SELECT count(*) AS n FROM t').get()).toEqual({ n: 0 });
    holder.close();
    db.close();
  });
});

describe('sqlite store: group commit', () => {
  it('answers concurrent claims of one key in one batch with one owner', async () => {
    const store = createSqliteStore({ path: join(dir, 'claims.db') });
    const claims = await Promise.all(
      Array.from({ length: 50 }, () => store.claim({ key: 'same', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })),
    );
    expect(claims.filter((c) => c.status === 'acquired')).toHaveLength(1);
    expect(claims.filter((c) => c.status === 'in_flight')).toHaveLength(49);
    await store.close();
  });

  it('commits queued completions when closed before the turn ends', async () => {
    const file = join(dir, 'close.db');
    const store = createSqliteStore({ path: file });
    const claim = await store.claim({ key: 'k', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    const completed = store.complete('k', claim.token, { status: 201, headers: [], body: Buffer.from('x') }, 60_000);
    await store.close();
    expect(await completed).toBe('ok');
    const reopened = createSqliteStore({ path: file });
    expect((await reopened.claim({ key: 'k', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe(
      'replay',
    );
    await reopened.close();
  });

  it('refuses an unknown synchronous level, and opens with full', async () => {
    expect(() => createSqliteStore({ path: ':memory:', synchronous: 'off' as 'full' })).toThrow(
      /synchronous: expected 'normal' or 'full', got "off"/,
    );
    const store = createSqliteStore({ path: join(dir, 'full.db'), synchronous: 'full' });
    const claim = await store.claim({ key: 'k', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    expect(claim.status).toBe('acquired');
    await store.close();
  });
});
