// The owner in the fencing test: claims a key on the shared SQLite file with a short lease, tells
// the parent it is running (the parent then SIGSTOPs it past its lease), and reports what
// happened to its late completion once resumed.
import { createIdempotency } from '../../dist/index.js';
import { createSqliteStore } from '../../dist/stores/sqlite.js';

const events = [];
const store = createSqliteStore({ path: process.env.DB_PATH });
const idem = createIdempotency({ store, lease: 400, ttl: '1h', onEvent: (e) => events.push(e.type) });

process.on('message', async ({ key }) => {
  let aborted = false;
  const response = await idem.handle(
    new Request('http://owner.test/pay', { method: 'POST', headers: { 'idempotency-key': key }, body: '{"a":1}' }),
    async (_request, ctx) => {
      ctx.signal.addEventListener('abort', () => {
        aborted = true;
      });
      process.send({ running: true });
      await new Promise((r) => setTimeout(r, 1_500));
      return new Response('from-A', { status: 201 });
    },
  );
  process.send({ done: true, status: response.status, body: await response.text(), events, aborted });
});
