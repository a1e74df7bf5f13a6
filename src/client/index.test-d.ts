// Type tests, checked by `tsc`: the client is a drop-in fetch, and undici's fetch is injectable.
import { fetch as undiciFetch } from 'undici';
import { expectTypeOf, test } from 'vitest';
import { createIdempotentFetch, type IdempotencyRetriesExhaustedError, type IdempotentFetch } from './index.js';

test('is assignable where fetch is expected', () => {
  const asFetch: typeof globalThis.fetch = createIdempotentFetch();
  expectTypeOf(asFetch).toBeFunction();
  expectTypeOf(createIdempotentFetch()).toEqualTypeOf<IdempotentFetch>();
  expectTypeOf(createIdempotentFetch()).returns.resolves.toEqualTypeOf<Response>();
});

test('accepts the global fetch and undici’s', () => {
  createIdempotentFetch({ fetch: globalThis.fetch });
  createIdempotentFetch({ fetch: undiciFetch });
});

test('takes a retry object or a number', () => {
  createIdempotentFetch({ retry: 4 });
  createIdempotentFetch({ retry: { limit: 4, methods: ['POST'], statusCodes: [503], backoffLimit: 1000 } });
  // @ts-expect-error limit is a number
  createIdempotentFetch({ retry: { limit: '4' } });
});

test('the error exposes the key and the attempts', () => {
  expectTypeOf<IdempotencyRetriesExhaustedError['idempotencyKey']>().toEqualTypeOf<string | undefined>();
  expectTypeOf<IdempotencyRetriesExhaustedError['code']>().toEqualTypeOf<'IDEMPO_RETRIES_EXHAUSTED'>();
});
