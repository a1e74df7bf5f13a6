// Fastify + idempo: a payments endpoint that charges once per Idempotency-Key.
//   npm run build && node examples/fastify/app.js
//   curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// Send it twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import idempotency from 'idempo/fastify';
import { createMemoryStore } from 'idempo/memory';

const app = Fastify();
// Every route registered after the plugin is covered (POST and PATCH by default).
await app.register(idempotency, { store: createMemoryStore() });

let charges = 0;
const schema = {
  body: {
    type: 'object',
    required: ['amount'],
    properties: { amount: { type: 'integer', minimum: 1 } },
  },
};
app.post('/payments', { schema }, async (request, reply) => {
  const payment = await request.idempotency.step('charge', () => {
    charges++;
    return { id: `pay_${randomUUID()}`, amount: request.body.amount };
  });
  return reply.code(201).send(payment);
});
// Webhooks carry their own deduplication: this route opts out.
app.post('/webhooks', { config: { idempotency: false } }, async () => ({ received: true }));
app.get('/stats', async () => ({ charges }));

const url = await app.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' });
console.log(`fastify example on ${url}`);
