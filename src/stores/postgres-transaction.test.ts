// ctx.transaction on the PostgreSQL store, on the shared server: the transaction contract, and the
// engine's use of it through handle() and makeIdempotent. Crash points (a real process killed
// with SIGKILL) and fencing with SIGSTOP are in test/transactions/.
import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeIdempotent } from '../adapters/function.js';
import { createIdempotency } from '../engine/engine.js';
import type { IdempotencyContext, IdempotencyRequest } from '../engine/types.js';
import { IdempotencyLeaseLostError, IdempotencyTransactionUnsupportedError } from '../vocabulary/index.js';
import { createMemoryStore } from './memory.js';
import { createPostgresStore, type PostgresStore } from './postgres.js';
import { transactionContractCases } from './transaction-contract.js';

const CONNECTION = { host: '127.0.0.1', port: 5432, user: 'postgres', database: 'test' } as const;
const SUFFIX = randomUUID().replaceAll('-', '').slice(0, 12);
const TABLE = `idempo_tx_${SUFFIX}`;
const MIGRATIONS = `idempo_tx_${SUFFIX}_mig`;
const EFFECTS = `idempo_tx_${SUFFIX}_effects`;

const pool = new pg.Pool({ ...CONNECTION, max: 8 });
pool.on('error', () => {});
let store: PostgresStore;

async function count(id: string): Promise<number> {
  const { rows } = await pool.query(`SELECT count(*)::int AS n FROM "${EFFECTS}" WHERE id = $1`, [id]);
  return rows[0].n;
}

beforeAll(async () => {
  store = createPostgresStore({ pool, table: TABLE, migrationsTable: MIGRATIONS, sweepInterval: false });
  await store.migrate();
  // No unique constraint on purpose: a second effect must show as a second row, not as an error.
  await pool.query(
    `CREATE TABLE "${EFFECTS}" (id text NOT NULL, amount integer, at timestamptz DEFAULT clock_timestamp())`,
  );
});

afterAll(async () => {
  await store?.close();
  for (const name of [TABLE, MIGRATIONS, EFFECTS]) await pool.query(`DROP TABLE IF EXISTS "${name}"`);
  await pool.end();
});

describe('postgres store: transaction contract', () => {
  for (const c of transactionContractCases) {
    it(c.name, () =>
      c.run({
        store: () => store,
        write: async (client, id) => {
          await (client as pg.PoolClient).query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]);
        },
        count,
      }),
    );
  }
});

function pay(id: string, key: string): Request {
  return new Request('http://test/pay', {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: JSON.stringify({ id, amount: 100 }),
  });
}

/** A handler whose effect is one row, inserted in ctx.transaction; the response is built from its result. */
async function payHandler(request: Request, ctx: IdempotencyContext): Promise<Response> {
  const { id, amount } = (await request.json()) as { id: string; amount: number };
  const order = await ctx.transaction(async (client: pg.PoolClient) => {
    const { rows } = await client.query(
      `INSERT INTO "${EFFECTS}" (id, amount) VALUES ($1, $2) RETURNING (extract(epoch FROM at) * 1000)::bigint::text AS at`,
      [id, amount],
    );
    return { id, at: rows[0].at as string };
  });
  return Response.json({ order, recovered: ctx.recovered }, { status: 201 });
}

describe('ctx.transaction through the engine (postgres)', () => {
  it('commits the effect with its step; a replay runs nothing', async () => {
    const idem = createIdempotency({ store });
    const id = randomUUID();
    const first = await idem.handle(pay(id, id), payHandler);
    expect(first.status).toBe(201);
    const body = await first.text();
    const again = await idem.handle(pay(id, id), payHandler);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await again.text()).toBe(body);
    expect(await count(id)).toBe(1);
  });

  it('a run that took the key over gets the committed result back and does not run the effect again', async () => {
    const id = randomUUID();
    const body = new TextEncoder().encode(JSON.stringify({ id, amount: 100 }));
    const request: IdempotencyRequest = {
      method: 'POST',
      url: '/pay',
      header: (name) => (name === 'idempotency-key' ? id : name === 'content-type' ? 'application/json' : undefined),
      body: async () => body,
    };
    // The first owner commits its transaction and then goes silent before its completion, as a
    // crashed process would: its renewals stop, so its lease passes.
    const first = await createIdempotency({ store, lease: 200 }).begin(request);
    if (first.action !== 'execute') throw new Error(`expected to execute, got ${first.action}`);
    const committed = await first.context.transaction((client: pg.PoolClient) =>
      client.query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]).then(() => ({ id, n: 1 })),
    );
    first.clientGone();
    expect(await count(id)).toBe(1);
    await new Promise((done) => setTimeout(done, 300));

    const takeover = createIdempotency({ store });
    const response = await takeover.handle(pay(id, id), async (_request, ctx) => {
      const again = await ctx.transaction(async () => {
        throw new Error('the committed transaction ran again');
      });
      return Response.json({ again, recovered: ctx.recovered }, { status: 201 });
    });
    expect(response.status).toBe(201);
    expect(await response.json()).toEqual({ again: committed, recovered: true });
    // The first owner's late completion is refused: its caller is told it lost the key.
    const late = await first.commit({ status: 201, headers: [], body: new Uint8Array() });
    expect(late?.status).toBe(409);
    expect(await count(id)).toBe(1);
  });

  it('a transaction whose key was taken over behind its back is rolled back; the caller gets 409 IDEMPO_LEASE_LOST', async () => {
    const id = randomUUID();
    const idem = createIdempotency({ store, lease: 60_000 });
    const response = await idem.handle(pay(id, id), async (_request, ctx) => {
      // Another owner takes the key over (token + 1) behind this one's back.
      await pool.query(`UPDATE "${TABLE}" SET token = token + 1 WHERE key = $1`, [ctx.storeKey]);
      try {
        await ctx.transaction((client: pg.PoolClient) =>
          client.query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]),
        );
      } catch (error) {
        expect(error).toBeInstanceOf(IdempotencyLeaseLostError);
        expect(ctx.signal.aborted).toBe(true);
        throw error;
      }
      return new Response('unreachable');
    });
    expect(response.status).toBe(409);
    expect(((await response.json()) as { code: string }).code).toBe('IDEMPO_LEASE_LOST');
    expect(await count(id)).toBe(0);
  });

  it('an error thrown inside rolls the effect back and releases the key; the retry runs it once', async () => {
    const idem = createIdempotency({ store });
    const id = randomUUID();
    const failed = await idem.handle(pay(id, id), async (_request, ctx) => {
      await ctx.transaction(async (client: pg.PoolClient) => {
        await client.query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]);
        throw new Error('declined');
      });
      return new Response('unreachable');
    });
    expect(failed.status).toBe(500);
    expect(await count(id)).toBe(0);
    const retry = await idem.handle(pay(id, id), payHandler);
    expect(retry.status).toBe(201);
    expect(await count(id)).toBe(1);
  });

  it('named and unnamed transactions in one run each keep their own result', async () => {
    const idem = createIdempotency({ store });
    const id = randomUUID();
    const response = await idem.handle(pay(id, id), async (_request, ctx) => {
      const a = await ctx.transaction((client: pg.PoolClient) =>
        client.query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]).then(() => 'a'),
      );
      const b = await ctx.transaction('second', (client: pg.PoolClient) =>
        client.query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]).then(() => 'b'),
      );
      const c = await ctx.transaction(() => 'c');
      return Response.json([a, b, c]);
    });
    expect(await response.json()).toEqual(['a', 'b', 'c']);
    expect(await count(id)).toBe(2);
  });

  it('a transaction started inside another is refused and rolls the outer one back', async () => {
    const idem = createIdempotency({ store });
    const id = randomUUID();
    const response = await idem.handle(pay(id, id), async (_request, ctx) => {
      await ctx.transaction(async (client: pg.PoolClient) => {
        await client.query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]);
        await ctx.transaction((inner: pg.PoolClient) => inner.query(`INSERT INTO "${EFFECTS}" (id) VALUES ($1)`, [id]));
      });
      return new Response('unreachable');
    });
    expect(((await response.json()) as { code: string }).code).toBe('IDEMPO_TRANSACTION_UNSUPPORTED');
    expect(await count(id)).toBe(0);
  });

  it('makeIdempotent: the function commits its effect once, and a repeat call gets the result', async () => {
    const charge = makeIdempotent(
      async (input: { id: string; amount: number }, ctx) =>
        ctx.transaction(async (client: pg.PoolClient) => {
          await client.query(`INSERT INTO "${EFFECTS}" (id, amount) VALUES ($1, $2)`, [input.id, input.amount]);
          return { charged: input.amount };
        }),
      { store, name: 'charge', key: (input) => input.id },
    );
    const id = randomUUID();
    expect(await charge({ id, amount: 7 })).toEqual({ charged: 7 });
    expect(await charge({ id, amount: 7 })).toEqual({ charged: 7 });
    expect(await count(id)).toBe(1);
  });

  it('a store without transactions of the database refuses with IDEMPO_TRANSACTION_UNSUPPORTED and runs nothing', async () => {
    const idem = createIdempotency({ store: createMemoryStore() });
    let ran = false;
    const response = await idem.handle(pay('x', randomUUID()), async (_request, ctx) => {
      await ctx.transaction(() => {
        ran = true;
      });
      return new Response('unreachable');
    });
    expect(ran).toBe(false);
    expect(response.status).toBe(500);
    expect(((await response.json()) as { code: string }).code).toBe('IDEMPO_TRANSACTION_UNSUPPORTED');
    const unprotected = await idem
      .handle(new Request('http://test/pay', { method: 'POST' }), (_request, ctx) =>
        ctx.transaction(() => new Response()),
      )
      .catch((error: unknown) => error);
    expect(unprotected).toBeInstanceOf(IdempotencyTransactionUnsupportedError);
  });
});
