/** The Hono middleware's own surface, through `app.request()` with no server. */
import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { idempotency } from '../../src/adapters/hono.js';
import { createMemoryStore } from '../../src/stores/memory.js';

const post = (key: string, body: string) => ({
  method: 'POST',
  headers: { 'idempotency-key': key, 'content-type': 'application/json' },
  body,
});

describe('hono middleware', () => {
  it('hands the route a request whose raw body is still readable', async () => {
    const app = new Hono();
    app.use('*', idempotency({ store: createMemoryStore() }));
    app.post('/raw', async (c) => c.text(await c.req.raw.text(), 201));
    const first = await app.request('/raw', post('k-raw', '{"a":1}'));
    expect(await first.text()).toBe('{"a":1}');
    const replay = await app.request('/raw', post('k-raw', '{"a":1}'));
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.text()).toBe('{"a":1}');
  });

  it('streams a response over maxResponseBytes whole, keeps its key completed, and answers a retry 410', async () => {
    const app = new Hono();
    let runs = 0;
    app.use('*', idempotency({ store: createMemoryStore(), maxResponseBytes: 1_000 }));
    app.post('/big', (c) => {
      runs++;
      const chunk = new TextEncoder().encode('x'.repeat(400));
      let sent = 0;
      const body = new ReadableStream<Uint8Array>({
        pull(controller) {
          if (sent++ < 5) controller.enqueue(chunk);
          else controller.close();
        },
      });
      return c.body(body, 201);
    });
    const first = await app.request('/big', post('k-big', '{}'));
    expect(first.status).toBe(201);
    expect((await first.text()).length).toBe(2_000);
    const again = await app.request('/big', post('k-big', '{}'));
    expect(again.status).toBe(410);
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(await again.json()).toMatchObject({ code: 'IDEMPO_RESPONSE_NOT_KEPT', originalStatus: 201 });
    expect(runs).toBe(1);
  });

  it('types the context as c.var.idempotency, unprotected when there is no key', async () => {
    const app = new Hono();
    app.use('*', idempotency({ store: createMemoryStore() }));
    app.post('/ctx', async (c) =>
      c.json({ key: c.var.idempotency.key, step: await c.get('idempotency').step('s', () => 7) }),
    );
    const reply = await app.request('/ctx', { method: 'POST' });
    expect(await reply.json()).toEqual({ key: '', step: 7 });
  });
});
