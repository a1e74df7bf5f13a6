// A child app for the ctx.transaction crash and fencing tests: a node:http server behind idempo's
// node adapter (on the built package: `npm run build` first) whose handler inserts one order row
// in ctx.transaction, on PostgreSQL or SQLite, with the idempo store on the same database.
//
// Configured by IDEMPO_TX_CONFIG (JSON): { name, kind: 'postgres' | 'sqlite', lease, point,
// stallMs, connection, table, migrationsTable, orders } or, for SQLite, { path }. `point` names
// where to stop: the app writes `AT <point>` on stdout (synchronously, so it is out even while
// the thread is blocked) and then blocks its thread for good (a crash point: the test kills it
// with SIGKILL) or for `stallMs` (a stall point: the test freezes it with SIGSTOP meanwhile).
// Points: before-effect, after-effect (inside the transaction, after the INSERT), after-commit
// (the transaction committed, the completion not stored), after-complete (the response stored,
// not sent), stall-after-effect, stall-before-transaction.
import { writeSync } from 'node:fs';
import http from 'node:http';
import { idempotencyContext, idempotent } from '../../dist/adapters/node.js';
import { createIdempotency } from '../../dist/index.js';

const config = JSON.parse(process.env.IDEMPO_TX_CONFIG ?? '{}');
const { name, kind, point, stallMs = 3_000 } = config;
const blocker = new Int32Array(new SharedArrayBuffer(4));

/** At `where`: announces it, then blocks the thread (for good at a crash point, for stallMs at a stall point). */
function at(where) {
  if (point !== where) return;
  writeSync(1, `AT ${where}\n`);
  if (where.startsWith('stall-')) Atomics.wait(blocker, 0, 0, stallMs);
  else Atomics.wait(blocker, 0, 0);
}

let store;
let transactionFn;
if (kind === 'postgres') {
  const { default: pg } = await import('pg');
  const { createPostgresStore } = await import('../../dist/stores/postgres.js');
  const pool = new pg.Pool({ ...config.connection, max: 4 });
  pool.on('error', () => {});
  store = createPostgresStore({ pool, table: config.table, migrationsTable: config.migrationsTable });
  transactionFn = (key, amount) => async (client) => {
    const { rows } = await client.query(
      `INSERT INTO "${config.orders}" (order_key, server, amount) VALUES ($1, $2, $3) RETURNING id::int AS id`,
      [key, name, amount],
    );
    at('after-effect');
    at('stall-after-effect');
    return { rowId: rows[0].id, writtenBy: name };
  };
} else {
  const { default: Database } = await import('better-sqlite3');
  const { createSqliteStore } = await import('../../dist/stores/sqlite.js');
  const db = new Database(config.path);
  db.exec(
    'CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, order_key TEXT NOT NULL, server TEXT NOT NULL, amount INTEGER)',
  );
  store = createSqliteStore({ path: config.path, database: db });
  const insert = db.prepare('INSERT INTO orders (order_key, server, amount) VALUES (?, ?, ?)');
  transactionFn = (key, amount) => () => {
    const { lastInsertRowid } = insert.run(key, name, amount);
    at('after-effect');
    return { rowId: Number(lastInsertRowid), writtenBy: name };
  };
}

const idem = createIdempotency({
  store,
  lease: config.lease ?? 1_000,
  onEvent(event) {
    // Emitted once the completion is stored, before the response is written.
    if (event.type === 'executed') at('after-complete');
  },
});

const server = http.createServer(
  idempotent(idem, async (req, res) => {
    let raw = '';
    for await (const chunk of req) raw += chunk;
    const { amount } = JSON.parse(raw);
    const key = req.headers['idempotency-key'];
    const ctx = idempotencyContext(req);
    at('before-effect');
    at('stall-before-transaction');
    const order = await ctx.transaction(transactionFn(key, amount));
    at('after-commit');
    res.writeHead(201, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ order, answeredBy: name, recovered: ctx.recovered }));
  }),
);

server.listen(0, '127.0.0.1', () => writeSync(1, `LISTENING ${server.address().port}\n`));
process.on('SIGTERM', () => process.exit(0));
