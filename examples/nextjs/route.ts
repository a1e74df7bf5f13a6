// A Next.js App Router route handler (app/payments/route.ts) under idempo. Route handlers, and
// every other fetch-standard runtime (Bun.serve, Deno.serve, Cloudflare Workers), take a web
// Request and return a Response, so they call the engine's `handle()` directly: no adapter.
//
// Serverless instances do not share memory: use a shared store (Redis here, or PostgreSQL) so a
// retry that lands on another instance still finds the key. createMemoryStore() is fine in `next dev`.
import { randomUUID } from 'node:crypto';
import { createIdempotency } from 'idempo';
import { createRedisStore } from 'idempo/redis';
import { Redis } from 'ioredis';

// One engine per server instance, made when the module loads, not per request.
const idem = createIdempotency({
  store: createRedisStore({ client: new Redis(process.env.REDIS_URL ?? 'redis://127.0.0.1:6379') }),
  concurrent: 'wait',
});

export async function POST(request: Request): Promise<Response> {
  return idem.handle(request, async (req, ctx) => {
    const { amount } = (await req.json()) as { amount?: unknown };
    if (typeof amount !== 'number' || !Number.isInteger(amount) || amount <= 0) {
      return Response.json({ error: 'amount must be a positive integer number of cents' }, { status: 400 });
    }
    // A step's result survives a released key: a retry after a crash does not charge again.
    const payment = await ctx.step('charge', () => ({ id: `pay_${randomUUID()}`, amount }));
    return Response.json(payment, { status: 201 });
  });
}
