// Express + idempo: a payments endpoint that charges once per Idempotency-Key.
//   npm run build && node examples/express/app.js
//   curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// Send it twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
import { randomUUID } from 'node:crypto';
import express from 'express';
import { idempotency } from 'idempo/express';
import { createMemoryStore } from 'idempo/memory';

const app = express();
app.use(express.json());
// After express.json() it fingerprints the parsed body; before it, the raw bytes. Either works.
app.use(idempotency({ store: createMemoryStore() }));

let charges = 0;
app.post('/payments', async (req, res) => {
  const amount = req.body?.amount;
  if (!Number.isInteger(amount) || amount <= 0) {
    res.status(400).json({ error: 'amount must be a positive integer number of cents' });
    return;
  }
  // A step's result survives a released key: a retry after a crash does not charge again.
  const payment = await req.idempotency.step('charge', () => {
    charges++;
    return { id: `pay_${randomUUID()}`, amount };
  });
  res.status(201).json(payment);
});
app.get('/stats', (_req, res) => {
  res.json({ charges });
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`express example on http://127.0.0.1:${server.address().port}`);
});
