import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
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

describe('sqlite store', () => {
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
    const swept = createSqliteStore({ path: join(dir, 'sweep.db'), sweepBatch: 7 });
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

  it('rejects an unsafe table name with a coded error', () => {
    expect(() => createSqliteStore({ path: ':memory:', table: 'x; DROP TABLE y' })).toThrow(
      expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID' }),
    );
  });
});
