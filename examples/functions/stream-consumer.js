// A Redis Streams consumer that bills each order once, although Redis delivers at least once.
//   npm run build && node examples/functions/stream-consumer.js worker-1
//   redis-cli XADD orders '*' order o-1 amount 1000
// A consumer that dies after billing but before XACK leaves the message pending; another one
// claims it (XAUTOCLAIM) and calls billOrder again, which replays the first result instead of
// billing twice. Env: REDIS_URL, STREAM (orders), GROUP (billing), LEDGER (append a line per real
// billing to this file), CRASH_AFTER (die after that many billings, before acknowledging the
// last one: for the test), UNPROTECTED=1 (bill without idempo: shows the duplicate).
import { appendFileSync } from 'node:fs';
import { makeIdempotent } from 'idempo/functions';
import { createRedisStore } from 'idempo/redis';
import { Redis } from 'ioredis';

const consumer = process.argv[2] ?? `worker-${process.pid}`;
const stream = process.env.STREAM ?? 'orders';
const group = process.env.GROUP ?? 'billing';
const crashAfter = Number(process.env.CRASH_AFTER ?? Number.POSITIVE_INFINITY);
const redis = new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379');
const storeClient = redis.duplicate();

let billed = 0;
async function bill(message) {
  // The side effect: in a real service, the payment provider's charge (given the message id as
  // its own idempotency key) and the order's row.
  if (process.env.LEDGER) appendFileSync(process.env.LEDGER, `${message.id} ${consumer}\n`);
  else console.log(`${consumer} billed ${message.fields.order}: ${message.fields.amount}`);
  billed++;
  return { billed: message.fields.order, by: consumer };
}

const billOrder = process.env.UNPROTECTED
  ? bill
  : makeIdempotent(bill, {
      store: createRedisStore({ client: storeClient, prefix: `${stream}:idempo:` }),
      name: 'bill-order',
      // The stream's message id: a redelivery carries the same one.
      key: (message) => message.id,
      fingerprint: (message) => message.fields,
      // Another consumer may hold the message (a claim raced a slow one): wait for its result.
      concurrent: 'wait',
      lease: '5s',
    });

await redis.xgroup('CREATE', stream, group, '0', 'MKSTREAM').catch((error) => {
  if (!String(error).includes('BUSYGROUP')) throw error;
});

/** A stream entry's flat [field, value, field, value, …] list as an object. */
function fieldsOf(list) {
  const fields = {};
  for (let i = 0; i < list.length; i += 2) fields[list[i]] = list[i + 1];
  return fields;
}

async function handle(id, list) {
  const message = { id, fields: fieldsOf(list) };
  await billOrder(message);
  if (billed >= crashAfter) process.kill(process.pid, 'SIGKILL'); // billed, not acknowledged
  await redis.xack(stream, group, id);
}

let stopping = false;
process.on('SIGTERM', () => {
  stopping = true;
});
while (!stopping) {
  // First the messages a dead consumer left pending for more than a second, then new ones.
  const [, claimed] = await redis.xautoclaim(stream, group, consumer, 1_000, '0-0', 'COUNT', 10);
  for (const [id, list] of claimed) if (list) await handle(id, list);
  const read = await redis.xreadgroup('GROUP', group, consumer, 'COUNT', 10, 'BLOCK', 200, 'STREAMS', stream, '>');
  for (const [, messages] of read ?? []) for (const [id, list] of messages) await handle(id, list);
}
redis.disconnect();
storeClient.disconnect();
