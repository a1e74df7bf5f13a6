// ctx.transaction on the SQLite store, with the application's own better-sqlite3 connection to the
// store's file: the transaction contract, the engine through handle() and makeIdempotent, and the
// refusals. Crash points (a real process killed with SIGKILL) and fencing with SIGSTOP are in
// test/transactions/.
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { makeIdempotent } from '../adapters/function.js';
import { createIdempotency } from '../engine/engine.js';
import { IdempotencyConfigInvalidError, IdempotencyTransactionUnsupportedError } from '../vocabulary/index.js';
import { createSqliteStore } from './sqlite.js';
import { transactionContractCases } from './transaction-contract.js';

const dir = mkdtempSync(join(tmpdir(), 'idempo-sqlite-tx-'));
const path = join(dir, 'app.db');
// The application's connection, and the store on the same file.
const db = new Database(path);
const store = createSqliteStore({ path, database: db, sweepInterval: false });
// No unique constraint on purpose: a second effect must show as a second row.
db.exec('CREATE TABLE effects (id TEXT NOT NULL, amount INTEGER)');
const insert = db.prepare('INSERT INTO effects (id, amount) VALUES (?, ?)');
const countOf = db.prepare('SELECT count(*) AS n FROM effects WHERE id = ?');
const count = (id: string) => (countOf.get(id) as { n: number }).n;

afterAll(async () => {
  await store.close();
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('sqlite store: transaction contract', () => {
  for (const c of transactionContractCases) {
    it(c.name, () =>
      c.run({
        store: () => store,
        write: (client, id) => {
          (client as Database.Database).prepare('INSERT INTO effects (id) VALUES (?)').run(id);
        },
        count,
      }),
    );
  }
});

function pay(id: string): Request {
  return new Request('http://test/pay', {
    method: 'POST',
    headers: { 'idempotency-key': id, 'content-type': 'application/json' },
    body: JSON.stringify({ id, amount: 100 }),
  });
}

describe('ctx.transaction through the engine (sqlite)', () => {
  it('commits the effect with its step; a replay runs nothing', async () => {
    const idem = createIdempotency({ store });
    const id = randomUUID();
    const handler = async (request: Request, ctx: import('../engine/types.js').IdempotencyContext) => {
      const { amount } = (await request.json()) as { amount: number };
      const order = await ctx.transaction((client: Database.Database) => {
        const { lastInsertRowid } = client.prepare('INSERT INTO effects (id, amount) VALUES (?, ?)').run(id, amount);
        return { id, row: Number(lastInsertRowid) };
      });
      return Response.json(order, { status: 201 });
    };
    const first = await idem.handle(pay(id), handler);
    expect(first.status).toBe(201);
    const body = await first.text();
    const again = await idem.handle(pay(id), handler);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await again.text()).toBe(body);
    expect(count(id)).toBe(1);
  });

  it('refuses a function that returns a promise, and rolls back what it wrote before its first await', async () => {
    const idem = createIdempotency({ store });
    const id = randomUUID();
    const response = await idem.handle(pay(id), async (_request, ctx) => {
      await ctx.transaction(async (client: Database.Database) => {
        client.prepare('INSERT INTO effects (id) VALUES (?)').run(id);
      });
      return new Response('unreachable');
    });
    expect(response.status).toBe(500);
    expect(((await response.json()) as { code: string }).code).toBe('IDEMPO_TRANSACTION_UNSUPPORTED');
    expect(count(id)).toBe(0);
  });

  it('refuses to run while the connection is already in a transaction of the application', async () => {
    const idem = createIdempotency({ store });
    const id = randomUUID();
    db.exec('BEGIN');
    try {
      const response = await idem.handle(pay(id), async (_request, ctx) => {
        await ctx.transaction(() => insert.run(id, 1));
        return new Response('unreachable');
      });
      expect(((await response.json()) as { code: string }).code).toBe('IDEMPO_TRANSACTION_UNSUPPORTED');
    } finally {
      db.exec('ROLLBACK');
    }
    expect(count(id)).toBe(0);
  });

  it("makeIdempotent: the function's effect commits once and a repeat call gets its result", async () => {
    const record = makeIdempotent(
      (input: { id: string; amount: number }, ctx) =>
        ctx.transaction(() => ({ row: Number(insert.run(input.id, input.amount).lastInsertRowid) })),
      { store, name: 'record', key: (input) => input.id },
    );
    const id = randomUUID();
    const first = await record({ id, amount: 3 });
    expect(await record({ id, amount: 3 })).toEqual(first);
    expect(count(id)).toBe(1);
  });

  it("refuses a database that is not open on the store's file", () => {
    const other = new Database(join(dir, 'other.db'));
    try {
      expect(() => createSqliteStore({ path, database: other })).toThrow(IdempotencyConfigInvalidError);
      const memory = new Database(':memory:');
      expect(() => createSqliteStore({ path: ':memory:', database: memory })).toThrow(IdempotencyConfigInvalidError);
      memory.close();
    } finally {
      other.close();
    }
  });

  it('a store without the database option refuses ctx.transaction', async () => {
    const plain = createSqliteStore({ path, sweepInterval: false });
    try {
      const idem = createIdempotency({ store: plain });
      const id = randomUUID();
      let error: unknown;
      await idem.handle(pay(id), async (_request, ctx) => {
        error = await ctx.transaction(() => insert.run(id, 1)).catch((e: unknown) => e);
        return new Response('ok');
      });
      expect(error).toBeInstanceOf(IdempotencyTransactionUnsupportedError);
      expect(count(id)).toBe(0);
    } finally {
      await plain.close();
    }
  });
});

describe('sqlite store: a transaction meeting another connection’s write lock', () => {
  it('waits for the lock on timers, the event loop running, then commits effect and step', async () => {
    const claim = await store.claim({ key: 'locked-tx', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    const holder = new Database(path);
    holder.exec('BEGIN IMMEDIATE');
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 10);
    setTimeout(() => holder.exec('COMMIT'), 200);
    const id = randomUUID();
    const result = await store.transaction?.({ key: 'locked-tx', token: claim.token, name: 'tx' }, (client) => {
      (client as Database.Database).prepare('INSERT INTO effects (id) VALUES (?)').run(id);
      return '"done"';
    });
    clearInterval(ticker);
    holder.close();
    expect(result).toBe('ok');
    expect(ticks).toBeGreaterThanOrEqual(10);
    expect(count(id)).toBe(1);
    const info = await store.inspect?.('locked-tx');
    expect(info?.steps).toEqual(['tx']);
    // The application's own connection keeps its busy timeout (better-sqlite3's default).
    expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
  });

  it('gives up with SQLITE_BUSY past busyTimeout, having run nothing', async () => {
    const file = join(dir, 'busy.db');
    const appDb = new Database(file);
    const quick = createSqliteStore({ path: file, database: appDb, sweepInterval: false, busyTimeout: 60 });
    appDb.exec('CREATE TABLE IF NOT EXISTS effects (id TEXT NOT NULL)');
    const claim = await quick.claim({ key: 'k', fingerprint: 'f', leaseMs: 60_000, ttlMs: 60_000 });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    const holder = new Database(file);
    holder.exec('BEGIN IMMEDIATE');
    let ran = false;
    await expect(
      quick.transaction?.({ key: 'k', token: claim.token, name: 'tx' }, () => {
        ran = true;
        return '"x"';
      }),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^SQLITE_BUSY/) });
    holder.exec('COMMIT');
    holder.close();
    expect(ran).toBe(false);
    await quick.close();
    appDb.close();
  });
});
