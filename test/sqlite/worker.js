// One server process of the multi-process test: node:http + idempo on a SQLite file shared with
// the other workers. It counts the handler's executions per key and reports them over IPC.
import http from 'node:http';
import { idempotent } from '../../dist/adapters/node.js';
import { createIdempotency } from '../../dist/index.js';
import { createSqliteStore } from '../../dist/stores/sqlite.js';

const store = createSqliteStore({ path: process.env.DB_PATH });
const idem = createIdempotency({ store, concurrent: process.env.CONCURRENT ?? 'reject', waitTimeout: '20s' });
const executions = {};

const server = http.createServer(
  idempotent(idem, (req, res) => {
    const key = req.headers['idempotency-key'];
    executions[key] = (executions[key] ?? 0) + 1;
    setTimeout(() => {
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ key, pid: process.pid }));
    }, 50);
  }),
);
server.listen(0, '127.0.0.1', () => process.send({ port: server.address().port }));
process.on('message', (message) => {
  if (message === 'stats') process.send({ executions });
  if (message === 'stop') server.close(() => store.close().then(() => process.exit(0)));
});
