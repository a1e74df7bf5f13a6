// Type tests, checked by `tsc`: the public core API as users write against it.
import { expectTypeOf, test } from 'vitest';
import {
  type ClaimResult,
  createIdempotency,
  type Idempotency,
  type IdempotencyContext,
  type IdempotencyEvent,
  type IdempotencyStore,
} from './index.js';
import { createMemoryStore } from './stores/memory.js';

test('createIdempotency needs a store and gives an engine', () => {
  expectTypeOf(createIdempotency({ store: createMemoryStore() })).toEqualTypeOf<Idempotency>();
  // @ts-expect-error the store is required
  createIdempotency({});
  // @ts-expect-error durations are numbers or unit strings
  createIdempotency({ store: createMemoryStore(), ttl: '24 hours' });
  // @ts-expect-error only the draft's 422 or Stripe's 400
  createIdempotency({ store: createMemoryStore(), mismatchStatus: 409 });
  createIdempotency({
    store: createMemoryStore(),
    ttl: '24h',
    lease: 30_000,
    releaseOn: [503, '5xx'],
    concurrent: 'wait',
  });
});

test('handle takes a web handler with a context and resolves to a Response', () => {
  const idem = createIdempotency({ store: createMemoryStore() });
  const response = idem.handle(new Request('http://x/'), async (request, ctx) => {
    expectTypeOf(request).toEqualTypeOf<Request>();
    expectTypeOf(ctx).toEqualTypeOf<IdempotencyContext>();
    expectTypeOf(ctx.step('charge', async () => ({ id: 'ch_1' }))).resolves.toEqualTypeOf<{ id: string }>();
    return new Response();
  });
  expectTypeOf(response).resolves.toEqualTypeOf<Response>();
});

test('events and claim results are tagged unions', () => {
  expectTypeOf<IdempotencyEvent['type']>().toEqualTypeOf<
    | 'executed'
    | 'replayed'
    | 'conflict'
    | 'mismatch'
    | 'invalid_key'
    | 'invalid_signature'
    | 'store_error'
    | 'released'
    | 'recovered'
    | 'lease_lost'
    | 'outcome_unknown'
    | 'rate_limited'
  >();
  const narrow = (result: ClaimResult) => {
    if (result.status === 'acquired') expectTypeOf(result.token).toBeNumber();
    if (result.status === 'in_flight') expectTypeOf(result.retryAfterMs).toBeNumber();
  };
  expectTypeOf(narrow).toBeFunction();
  expectTypeOf(createMemoryStore()).toMatchTypeOf<IdempotencyStore>();
});
