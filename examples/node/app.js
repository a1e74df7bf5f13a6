// node:http + idempo: a payments endpoint that charges once per Idempotency-Key, with no framework.
//   npm run build && node examples/node/app.js
//   curl -i -X POST localhost:3000/payments -H 'Idempotency-Key: order-1' -H 'content-type: application/json' -d '{"amount":1000}'
// Send it twice: the second answer is the first one replayed, with Idempotent-Replayed: true.
import { randomUUID } from 'node:crypto';
import http from 'node:http';
import { json } from 'node:stream/consumers';
import { createIdempotency } from 'idempo';
import { createMemoryStore } from 'idempo/memory';
import { idempotencyContext, idempotent } from 'idempo/node';

const idem = createIdempotency({ store: createMemoryStore() });

let charges = 0;
const send = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
};

// The listener reads the body itself: idempo read the bytes to fingerprint them and handed them back.
const server = http.createServer(
  idempotent(idem, async (req, res) => {
    if (req.method === 'GET' && req.url === '/stats') return send(res, 200, { charges });
    if (req.method !== 'POST' || req.url !== '/payments') return send(res, 404, { error: 'not found' });
    const body = await json(req).catch(() => undefined);
    if (!Number.isInteger(body?.amount) || body.amount <= 0) {
      return send(res, 400, { error: 'amount must be a positive integer number of cents' });
    }
    const charge = () => {
      charges++;
      return { id: `pay_${randomUUID()}`, amount: body.amount };
    };
    // No context when idempo does not protect the request (no key): then the charge simply runs.
    // A step's result survives a released key: a retry after a crash does not charge again.
    const ctx = idempotencyContext(req);
    send(res, 201, ctx ? await ctx.step('charge', charge) : charge());
  }),
);

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`node:http example on http://127.0.0.1:${server.address().port}`);
});
