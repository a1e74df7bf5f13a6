import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { makeWithoutRowidFile } from '../../test/helpers/sqlite-files.js';
import { storeContractCases } from './contract.js';
import { createSqliteStore } from './sqlite.js';

const dir = mkdtempSync(join(tmpdir(), 'idempo-sqlite-'));
const path = join(dir, 'contract.db');
const store = createSqliteStore({ path });
// A second connection to the same file, as a second process would have.
const other = createSqliteStore({ path });

afterAll(async () => {
  await store.close();
  await other.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('sqlite store: shared contract', () => {
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => store, otherStore: () => other }));
});

const require = createRequire(import.meta.url);
const Database = require('better-sqlite3') as typeof import('better-sqlite3');

/** A new file in `dir` holding the table as stores made it before the rowid layout, plus any further SQL. */
const olderFile = (name: string, ...more: string[]) => makeWithoutRowidFile(join(dir, name), ...more);

function tableSql(file: string): string {
  const db = new Database(file, { readonly: true });
  try {
    return (db.prepare(`SELECT sql FROM sqlite_master WHERE name = 'idempo_records'`).get() as { sql: string }).sql;
  } finally {
    db.close();
  }
}

// A file made by an earlier version keeps its WITHOUT ROWID table, and every operation still holds on it.
const olderPath = olderFile('without-rowid.db');
const olderStore = createSqliteStore({ path: olderPath, layoutWarning: false });
const olderOther = createSqliteStore({ path: olderPath, layoutWarning: false });
afterAll(async () => {
  await olderStore.close();
  await olderOther.close();
});

describe('sqlite store on a file with the older WITHOUT ROWID table: shared contract', () => {
  for (const c of storeContractCases) {
    it(c.name, () => c.run({ store: () => olderStore, otherStore: () => olderOther }));
  }
});

describe('sqlite store', () => {
  it('makes a new table in rowid order, and leaves the layout of an existing one as it is', () => {
    // Keys are random: clustered by key, every claim and every completion wrote a page of its own.
    expect(tableSql(path)).not.toMatch(/WITHOUT ROWID/i);
    expect(tableSql(olderPath)).toMatch(/WITHOUT ROWID/i);
  });

  it('migrate() moves a WITHOUT ROWID table to rowid order while another connection serves on it, and every record survives', async () => {
    const file = olderFile('moved.db');
    const mover = createSqliteStore({ path: file, layoutWarning: false });
    // Another process's store, with its statements prepared on the old table.
    const serving = createSqliteStore({ path: file, layoutWarning: false });
    const input = { fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 };
    const done = await mover.claim({ key: 'done', ...input });
    const running = await serving.claim({ key: 'running', ...input });
    if (done.status !== 'acquired' || running.status !== 'acquired') throw new Error('expected acquired');
    const paid = { status: 201, headers: [['x', 'y']] as [string, string][], body: Buffer.from('paid') };
    await mover.complete('done', done.token, paid, 60_000);
    await serving.saveStep('running', running.token, 'charge', 'ch_1');

    expect([mover.schemaVersion(), serving.schemaVersion()]).toEqual([1, 1]);
    expect(await mover.migrate()).toEqual({ table: 'idempo_records', from: 1, to: 2, applied: [2] });
    expect(tableSql(file)).not.toMatch(/WITHOUT ROWID/i);
    // Read from the file, so the other connection sees the move too.
    expect([mover.schemaVersion(), serving.schemaVersion()]).toEqual([2, 2]);

    for (const store of [serving, mover]) {
      const replay = await store.claim({ key: 'done', ...input });
      expect(replay.status).toBe('replay');
      if (replay.status === 'replay') {
        expect(Buffer.from(replay.response.body).toString()).toBe('paid');
        expect(replay.response.headers).toEqual([['x', 'y']]);
      }
      expect((await store.claim({ key: 'done', ...input, fingerprint: 'other' })).status).toBe('mismatch');
      expect((await store.claim({ key: 'running', ...input })).status).toBe('in_flight');
    }
    expect((await mover.inspect?.('running'))?.steps).toEqual(['charge']);
    // The owner keeps its lease across the move: its token still fences.
    expect(await serving.complete('running', running.token, paid, 60_000)).toBe('ok');
    expect(await serving.complete('running', running.token, paid, 60_000)).toBe('stale');
    expect((await serving.claim({ key: 'new', ...input })).status).toBe('acquired');
    expect((await mover.claim({ key: 'new', ...input })).status).toBe('in_flight');

    expect(await serving.migrate()).toEqual({ table: 'idempo_records', from: 2, to: 2, applied: [] });
    await mover.close();
    await serving.close();
    const reopened = createSqliteStore({ path: file });
    expect((await reopened.claim({ key: 'running', ...input })).status).toBe('replay');
    expect(await reopened.migrate()).toEqual({ table: 'idempo_records', from: 2, to: 2, applied: [] });
    await reopened.close();
  });

  it('warns once, as a process warning, when it opens a file in the older layout, and not after migrate()', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => {
      if ((warning as { code?: string }).code === 'IDEMPO_SQLITE_OLD_LAYOUT') warnings.push(warning);
    };
    process.on('warning', onWarning);
    try {
      const file = olderFile('warned.db');
      const first = createSqliteStore({ path: file });
      const second = createSqliteStore({ path: file });
      // Node emits process warnings on the next tick.
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.map((w) => w.message)).toEqual([
        `idempo: the SQLite table idempo_records in ${file} has the layout of an earlier idempo version (clustered by key): it works, but writes about twice the bytes per request. To move it, keeping every record: await store.migrate(), or stop the processes using the file and run idempo migrate --store sqlite:${file}.`,
      ]);

      // Not when asked not to, nor for a table this version made, nor for one migrate() moved.
      const quietFile = olderFile('quiet.db');
      const quiet = createSqliteStore({ path: quietFile, layoutWarning: false });
      const fresh = createSqliteStore({ path: join(dir, 'fresh-layout.db') });
      await quiet.migrate();
      await Promise.all([first, second, quiet].map((s) => s.close()));
      const moved = createSqliteStore({ path: quietFile });
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings).toHaveLength(1);
      await Promise.all([fresh, moved].map((s) => s.close()));
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('migrate() leaves the table as it was when the move fails, and says why', async () => {
    // A table of the application's own, with the name the move would use: never dropped.
    const file = olderFile('blocked-move.db', 'CREATE TABLE idempo_records_rowid (mine TEXT)');
    const store = createSqliteStore({ path: file, layoutWarning: false });
    const input = { fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 };
    const claim = await store.claim({ key: 'kept', ...input });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    await expect(store.migrate()).rejects.toMatchObject({
      code: 'IDEMPO_STORE_UNAVAILABLE',
      message: expect.stringMatching(/could not move idempo_records .*idempo_records_rowid already exists.*as it was/),
    });
    expect(tableSql(file)).toMatch(/WITHOUT ROWID/i);
    const check = new Database(file, { readonly: true });
    expect(check.prepare(`SELECT sql FROM sqlite_master WHERE name = 'idempo_records_rowid'`).get()).toEqual({
      sql: 'CREATE TABLE idempo_records_rowid (mine TEXT)',
    });
    check.close();
    expect((await store.claim({ key: 'kept', ...input })).status).toBe('in_flight');
    expect(
      await store.complete('kept', claim.token, { status: 200, headers: [], body: new Uint8Array() }, 60_000),
    ).toBe('ok');
    await store.close();
  });

  it('migrate() waits for another connection’s write lock on timers up to busyTimeout, then gives up with the table as it was', async () => {
    const file = olderFile('locked-move.db');
    const store = createSqliteStore({ path: file, busyTimeout: 150, layoutWarning: false });
    const writer = new Database(file);
    writer.exec('BEGIN IMMEDIATE');
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    const started = Date.now();
    await expect(store.migrate()).rejects.toMatchObject({ code: 'IDEMPO_STORE_UNAVAILABLE' });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    clearInterval(ticker);
    // The event loop ran meanwhile: SQLite's busy handler would have slept inside the call.
    expect(ticks).toBeGreaterThanOrEqual(5);
    writer.exec('COMMIT');
    writer.close();
    expect(tableSql(file)).toMatch(/WITHOUT ROWID/i);
    expect(await store.migrate()).toMatchObject({ from: 1, to: 2 });
    await store.close();
  });

  it('keeps completed records across a reopen of the file', async () => {
    const file = join(dir, 'reopen.db');
    const first = createSqliteStore({ path: file });
    const claim = await first.claim({ key: 'k', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    await first.complete('k', claim.token, { status: 201, headers: [['x', 'y']], body: Buffer.from('body') }, 60_000);
    await first.close();
    const second = createSqliteStore({ path: file });
    const replay = await second.claim({ key: 'k', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    expect(replay.status).toBe('replay');
    if (replay.status === 'replay') expect(Buffer.from(replay.response.body).toString()).toBe('body');
    await second.close();
  });

  it('sweeps expired records in bounded batches and keeps live in-flight ones', async () => {
    const swept = createSqliteStore({ path: join(dir, 'sweep.db'), sweepBatchSize: 7 });
    for (let i = 0; i < 30; i++) {
      const claim = await swept.claim({ key: `done-${i}`, fingerprint: 'f', leaseMs: 10, ttlMs: 10 });
      if (claim.status === 'acquired')
        await swept.complete(`done-${i}`, claim.token, { status: 200, headers: [], body: new Uint8Array() }, 10);
    }
    await swept.claim({ key: 'live', fingerprint: 'f', leaseMs: 60_000, ttlMs: 10 });
    await new Promise((r) => setTimeout(r, 50));
    expect(swept.sweep()).toBe(30);
    expect((await swept.claim({ key: 'live', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 })).status).toBe(
      'in_flight',
    );
    await swept.close();
  });

  it('answers replays and in-flight duplicates while another process holds the write lock', async () => {
    const file = join(dir, 'locked.db');
    const fast = createSqliteStore({ path: file, busyTimeout: 100 });
    // The deprecated name of the same option still works.
    const legacy = createSqliteStore({ path: file, busyTimeoutMs: 100 });
    const input = { fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 };
    const done = await fast.claim({ key: 'done', ...input });
    if (done.status !== 'acquired') throw new Error('expected acquired');
    await fast.complete('done', done.token, { status: 201, headers: [], body: Buffer.from('kept') }, 60_000);
    await fast.claim({ key: 'running', ...input });

    // Another process in the middle of a write: it holds the lock until it commits.
    const writer = new Database(file);
    writer.exec('BEGIN IMMEDIATE');
    try {
      const started = Date.now();
      const replay = await fast.claim({ key: 'done', ...input });
      expect(replay.status).toBe('replay');
      if (replay.status === 'replay') expect(Buffer.from(replay.response.body).toString()).toBe('kept');
      expect((await fast.claim({ key: 'running', ...input })).status).toBe('in_flight');
      expect((await fast.claim({ key: 'done', ...input, fingerprint: 'other' })).status).toBe('mismatch');
      // Less than the 100 ms busy timeout: none of the three waited for the lock.
      expect(Date.now() - started).toBeLessThan(100);
      // A claim that would take a key does need the lock, and says so once the timeout passes.
      await expect(fast.claim({ key: 'new', ...input })).rejects.toThrow(/locked|busy/i);
      const legacyStarted = Date.now();
      await expect(legacy.claim({ key: 'new', ...input })).rejects.toThrow(/locked|busy/i);
      expect(Date.now() - legacyStarted).toBeLessThan(1_000);
    } finally {
      writer.exec('ROLLBACK');
      writer.close();
    }
    expect((await fast.claim({ key: 'new', ...input })).status).toBe('acquired');
    await fast.close();
    await legacy.close();
  });

  it('waits for another process’s write lock on timers, so the event loop keeps running meanwhile', async () => {
    const file = join(dir, 'held.db');
    const patient = createSqliteStore({ path: file, busyTimeout: '3s' });
    const writer = new Database(file);
    writer.exec('BEGIN IMMEDIATE');
    // Only this process's event loop can let the other connection go: a claim that slept inside
    // SQLite would hold it until the busy timeout, then fail.
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    setTimeout(() => writer.exec('COMMIT'), 300);
    const started = Date.now();
    try {
      const claim = await patient.claim({ key: 'k', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
      expect(claim.status).toBe('acquired');
      expect(Date.now() - started).toBeGreaterThanOrEqual(290);
      expect(Date.now() - started).toBeLessThan(2_000);
      expect(ticks).toBeGreaterThan(10);
    } finally {
      clearInterval(ticker);
      writer.close();
      await patient.close();
    }
  });

  it('reports a sweep that fails to onBackgroundError, and keeps sweeping', async () => {
    const file = join(dir, 'busy-sweep.db');
    const errors: unknown[] = [];
    const swept = createSqliteStore({ path: file, sweepInterval: 20, onBackgroundError: (e) => errors.push(e) });
    const writer = new Database(file);
    writer.exec('BEGIN IMMEDIATE');
    await new Promise((r) => setTimeout(r, 100));
    writer.exec('ROLLBACK');
    writer.close();
    expect(errors.length).toBeGreaterThan(0);
    expect(String(errors[0])).toMatch(/locked|busy/i);
    const claim = await swept.claim({ key: 'k', fingerprint: 'f', leaseMs: 10, ttlMs: 10 });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    await swept.release('k', claim.token, 10);
    await new Promise((r) => setTimeout(r, 100));
    // The timer went on after the failures and deleted the expired row.
    expect(swept.sweep()).toBe(0);
    await swept.close();
  });

  it('rejects bad sizes and durations with coded errors, under the current and the deprecated names', () => {
    for (const options of [
      { sweepBatchSize: 0 },
      { sweepBatch: 1.5 },
      { busyTimeout: 'soon' },
      { sweepInterval: 0 },
      { pollInterval: -1 },
    ]) {
      expect(() => createSqliteStore({ path: ':memory:', ...(options as object) })).toThrow(
        expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID' }),
      );
    }
  });

  it('opens a file another process is writing to: setting up waits for its lock', async () => {
    const file = join(dir, 'opening.db');
    // Another process takes the write lock of the new file and keeps it for 400 ms.
    const holder = spawn(
      process.execPath,
      [
        '-e',
        `const db = new (require('better-sqlite3'))(${JSON.stringify(file)}); db.exec('BEGIN IMMEDIATE');
         process.stdout.write('locked'); setTimeout(() => { db.exec('COMMIT'); db.close(); }, 400);`,
      ],
      { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] },
    );
    // Listened for now: the holder may be gone before the store below has closed.
    const exited = new Promise((resolve) => holder.once('exit', resolve));
    await new Promise((resolve) => holder.stdout?.once('data', resolve));
    const store = createSqliteStore({ path: file, busyTimeout: '5s' });
    expect((await store.claim({ key: 'k', fingerprint: 'f', leaseMs: 1_000, ttlMs: 1_000 })).status).toBe('acquired');
    await store.close();
    await exited;
  });

  it('rejects an unsafe table name with a coded error', () => {
    expect(() => createSqliteStore({ path: ':memory:', table: 'x; DROP TABLE y' })).toThrow(
      expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID' }),
    );
  });
});
