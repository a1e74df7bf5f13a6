import express from 'express';
import { expectTypeOf, test } from 'vitest';
import type { IdempotencyContext } from '../engine/types.js';
import { createMemoryStore } from '../stores/memory.js';
import { idempotency } from './express.js';

test('routes behind the middleware reach req.idempotency without a non-null assertion', () => {
  const app = express();
  app.use(idempotency({ store: createMemoryStore() }));
  app.post('/payments', async (req, res) => {
    expectTypeOf(req.idempotency).toEqualTypeOf<IdempotencyContext>();
    const charge = await req.idempotency.step('charge', async () => ({ id: 'ch_1' }));
    expectTypeOf(charge).toEqualTypeOf<{ id: string }>();
    res.status(201).json(charge);
  });
});
