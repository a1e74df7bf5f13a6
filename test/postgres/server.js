// A child app server for the PostgreSQL integration tests: a node:http server behind idempo's
// node adapter, on the built package (`npm test` builds first), storing keys in PostgreSQL.
// Configured by the IDEMPO_TEST_CONFIG environment variable (JSON); talks to its parent over IPC:
// 'listening' with its port, 'ran' when a handler starts, 'event' for every idempo event.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import pg from 'pg';
import { idempotent } from '../../dist/adapters/node.js';
import { createIdempotency } from '../../dist/index.js';
import { createPostgresStore } from '../../dist/stores/postgres.js';

const config = JSON.parse(process.env.IDEMPO_TEST_CONFIG ?? '{}');
const { name, connection, table, migrationsTable, runsTable } = config;

const pool = new pg.Pool({ ...connection, max: 5, connectionTimeoutMillis: 2_000 });
pool.on('error', () => {});
const store = createPostgresStore({ pool, table, migrationsTable });

function send(message) {
  if (process.connected) process.send(message);
}

const idem = createIdempotency({
  store,
  lease: config.lease ?? '60s',
  ttl: config.ttl ?? '1h',
  concurrent: config.concurrent ?? 'reject',
  waitTimeout: config.waitTimeout ?? '10s',
  onEvent(event) {
    send({ type: 'event', event: { type: event.type, key: event.key, status: event.status, reason: event.reason } });
  },
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const server = http.createServer(
  idempotent(idem, async (req, res) => {
    const key = req.headers['idempotency-key'];
    // The delay travels in a header, which is not part of the fingerprint: a retry may ask for another.
    const delay = Number(req.headers['x-delay'] ?? 0);
    for await (const _chunk of req);
    await pool.query(`INSERT INTO "${runsTable}" (key, server, pid) VALUES ($1, $2, $3)`, [key, name, process.pid]);
    send({ type: 'ran', key });
    const body = JSON.stringify({ key, server: name, pid: process.pid, nonce: randomUUID() });
    // How to answer travels in a header too: `status` sets statusCode and only calls end(), so
    // idempo can still answer instead; `head-first` puts the head on the wire before the delay.
    const respond = req.headers['x-respond'];
    if (respond === 'head-first') {
      res.writeHead(201, { 'content-type': 'application/json' });
      res.flushHeaders();
      if (delay > 0) await sleep(delay);
      res.end(body);
      return;
    }
    if (delay > 0) await sleep(delay);
    if (respond === 'status') {
      res.statusCode = 201;
      res.setHeader('content-type', 'application/json');
      res.end(body);
      return;
    }
    res.writeHead(201, { 'content-type': 'application/json' });
    res.end(body);
  }),
);

server.listen(0, '127.0.0.1', () => send({ type: 'listening', port: server.address().port }));

process.on('message', (message) => {
  if (message !== 'stop') return;
  server.close();
  server.closeAllConnections();
  store
    .close()
    .then(() => pool.end())
    .finally(() => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
