// One process of the multi-process test: calls an idempotent function on every key it is sent,
// all at once, and appends one line per real execution to a ledger file the test reads.
import { appendFileSync } from 'node:fs';
import { makeIdempotent } from '../../dist/adapters/function.js';
import { createSqliteStore } from '../../dist/stores/sqlite.js';

const store = createSqliteStore({ path: process.env.DB_PATH });
const charge = makeIdempotent(
  async function charge(order) {
    appendFileSync(process.env.LEDGER, `${order.id} ${process.pid}\n`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    return { chargeId: `ch_${order.id}`, by: process.pid };
  },
  { store, key: (order) => order.id, concurrent: 'wait', waitTimeout: '20s' },
);

process.on('message', async (message) => {
  if (message === 'stop') {
    await store.close();
    process.exit(0);
  }
  const results = await Promise.all(
    message.keys.map((id) =>
      charge({ id, amount: 5 }).then(
        (r) => r,
        (e) => ({ error: e.code ?? String(e) }),
      ),
    ),
  );
  process.send({ results });
});
process.send({ ready: true });
