// Koa + idempo: a payments endpoint that charges once per Idempotency-Key.
//   npm run build && node examples/koa/app.js
//   curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// Send it twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
import { randomUUID } from 'node:crypto';
import { json } from 'node:stream/consumers';
import { idempotency } from 'idempo/koa';
import { createMemoryStore } from 'idempo/memory';
import Koa from 'koa';

const app = new Koa();
// Before or after a body parser: before, idempo hands the bytes it read back to the stream.
app.use(idempotency({ store: createMemoryStore() }));

let charges = 0;
app.use(async (ctx) => {
  if (ctx.method === 'GET' && ctx.path === '/stats') {
    ctx.body = { charges };
    return;
  }
  if (ctx.method !== 'POST' || ctx.path !== '/payments') ctx.throw(404);
  const body = await json(ctx.req).catch(() => ctx.throw(400, 'the body must be JSON'));
  if (!Number.isInteger(body?.amount) || body.amount <= 0) {
    ctx.throw(400, 'amount must be a positive integer number of cents');
  }
  ctx.status = 201;
  ctx.body = await ctx.state.idempotency.step('charge', () => {
    charges++;
    return { id: `pay_${randomUUID()}`, amount: body.amount };
  });
});

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`koa example on http://127.0.0.1:${server.address().port}`);
});
