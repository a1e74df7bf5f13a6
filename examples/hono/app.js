// Hono + idempo on Node (@hono/node-server): a payments endpoint that charges once per key.
// The same app runs on Bun (`export default app`) or Deno (`Deno.serve(app.fetch)`).
//   npm run build && node examples/hono/app.js
//   curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// Send it twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
import { randomUUID } from 'node:crypto';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { idempotency } from 'idempo/hono';
import { createMemoryStore } from 'idempo/memory';

const app = new Hono();
app.use('/payments/*', idempotency({ store: createMemoryStore() }));

let charges = 0;
app.post('/payments', async (c) => {
  const { amount } = await c.req.json();
  if (!Number.isInteger(amount) || amount <= 0) {
    return c.json({ error: 'amount must be a positive integer number of cents' }, 400);
  }
  const payment = await c.var.idempotency.step('charge', () => {
    charges++;
    return { id: `pay_${randomUUID()}`, amount };
  });
  return c.json(payment, 201);
});
app.get('/stats', (c) => c.json({ charges }));

serve({ fetch: app.fetch, port: Number(process.env.PORT ?? 3000), hostname: '127.0.0.1' }, (info) => {
  console.log(`hono example on http://127.0.0.1:${info.port}`);
});
