import { existsSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createSqliteStore, type SqliteStore } from './sqlite.js';
import { startCheckpointer } from './sqlite-checkpointer.js';

const dir = mkdtempSync(join(tmpdir(), 'idempo-checkpoint-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const driverPath = createRequire(import.meta.url).resolve('better-sqlite3');
const size = (file: string): number => (existsSync(file) ? statSync(file).size : 0);
const threads = (): number => readdirSync('/proc/self/task').length;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Claims and completes `count` fresh keys, `parallel` at a time, as concurrent requests would. */
async function fill(store: SqliteStore, count: number, parallel = 50): Promise<void> {
  for (let start = 0; start < count; start += parallel) {
    await Promise.all(
      Array.from({ length: Math.min(parallel, count - start) }, async (_, i) => {
        const key = `k-${start + i}`;
        const claim = await store.claim({ key, fingerprint: 'f', leaseMs: 60_000, ttlMs: 3_600_000 });
        if (claim.status !== 'acquired') throw new Error(`expected acquired, got ${claim.status}`);
        const body = Buffer.from(JSON.stringify({ id: key, amount: 1000, status: 'succeeded' }));
        await store.complete(
          key,
          claim.token,
          { status: 201, headers: [['content-type', 'application/json']], body },
          3_600_000,
        );
      }),
    );
  }
}

/** Waits until `check` holds, up to `ms`. */
async function eventually(check: () => boolean, ms = 3_000): Promise<boolean> {
  const giveUpAt = Date.now() + ms;
  while (!check()) {
    if (Date.now() > giveUpAt) return false;
    await sleep(20);
  }
  return true;
}

describe('sqlite store: WAL checkpoints', () => {
  it('copies the WAL into the database file from its thread while the store is idle', async () => {
    const file = join(dir, 'background.db');
    const store = createSqliteStore({ path: file });
    const before = size(file);
    // Fewer pages than SQLite's inline checkpoint threshold (1000): inline, nothing would copy them.
    await fill(store, 100);
    expect(await eventually(() => size(file) > before)).toBe(true);
    await store.close();
  });

  it("leaves them in the WAL with checkpoint: 'inline' until the WAL reaches SQLite's threshold", async () => {
    const file = join(dir, 'inline.db');
    const store = createSqliteStore({ path: file, checkpoint: 'inline' });
    const before = size(file);
    await fill(store, 100);
    await sleep(600);
    expect(size(file)).toBe(before);
    expect(size(`${file}-wal`)).toBeGreaterThan(64 * 1024);
    await store.close();
  });

  it('keeps the WAL bounded under a steady stream of writes, and every record readable', async () => {
    const file = join(dir, 'steady.db');
    const store = createSqliteStore({ path: file });
    let largest = 0;
    const watch = setInterval(() => {
      largest = Math.max(largest, size(`${file}-wal`));
    }, 5);
    await fill(store, 20_000, 20);
    clearInterval(watch);
    // Some 50 MiB of pages went through it. The thread alone rarely finds every frame copied at
    // the moment a write starts, which the WAL needs to start over; the store's connection
    // finishing the copy at 16 MiB (4000 pages) is what bounds it.
    expect(largest).toBeLessThan(24 * 1024 * 1024);
    for (const key of ['k-0', 'k-2999', 'k-5999']) {
      expect((await store.claim({ key, fingerprint: 'f', leaseMs: 1_000, ttlMs: 1_000 })).status).toBe('replay');
    }
    await store.close();
  });

  it('stops its thread and removes the WAL on close', async () => {
    const file = join(dir, 'close.db');
    const idle = threads();
    const store = createSqliteStore({ path: file });
    expect(await eventually(() => threads() > idle)).toBe(true);
    await fill(store, 100);
    await store.close();
    expect(await eventually(() => threads() === idle)).toBe(true);
    expect(existsSync(`${file}-wal`)).toBe(false);
    const reopened = createSqliteStore({ path: file, checkpoint: 'inline' });
    expect((await reopened.claim({ key: 'k-99', fingerprint: 'f', leaseMs: 1_000, ttlMs: 1_000 })).status).toBe(
      'replay',
    );
    await reopened.close();
  });

  it('starts no thread for an in-memory database, which has no WAL', async () => {
    const idle = threads();
    const store = createSqliteStore({ path: ':memory:' });
    await fill(store, 20);
    await sleep(100);
    expect(threads()).toBe(idle);
    await store.close();
  });

  it('refuses an unknown checkpoint mode', () => {
    expect(() => createSqliteStore({ path: ':memory:', checkpoint: 'never' as 'inline' })).toThrow(
      expect.objectContaining({
        code: 'IDEMPO_CONFIG_INVALID',
        message: `checkpoint: expected 'background' or 'inline', got "never"`,
      }),
    );
  });

  it('reports a thread that cannot open the database, once', async () => {
    const failures: unknown[] = [];
    const checkpointer = startCheckpointer({
      path: join(dir, 'does-not-exist.db'),
      driverPath,
      idleMs: 10,
      busyMs: 10,
      onFailed: (error) => failures.push(error),
    });
    expect(await eventually(() => failures.length > 0)).toBe(true);
    await sleep(50);
    expect(failures).toHaveLength(1);
    expect(failures[0]).toMatchObject({ code: 'SQLITE_CANTOPEN', message: 'unable to open database file' });
    await checkpointer.stop();
  });

  it('reports a thread whose driver cannot load', async () => {
    const failures: unknown[] = [];
    const checkpointer = startCheckpointer({
      path: join(dir, 'background.db'),
      driverPath: join(dir, 'no-such-driver.js'),
      idleMs: 10,
      busyMs: 10,
      onFailed: (error) => failures.push(error),
    });
    expect(await eventually(() => failures.length > 0)).toBe(true);
    expect((failures[0] as Error).message).toMatch(/Cannot find module/);
    await checkpointer.stop();
  });
});
