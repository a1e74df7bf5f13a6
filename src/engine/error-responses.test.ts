import { describe, expect, it } from 'vitest';
import { createMemoryStore } from '../stores/memory.js';
import { IdempotencyHandlerFailedError, IdempotencyUpstreamUnreachableError } from '../vocabulary/index.js';
import { createIdempotency } from './engine.js';

const request = (key: string) =>
  new Request('http://api.test/pay', { method: 'POST', headers: { 'idempotency-key': key }, body: '{}' });

describe('error responses: one route for every error idempo answers', () => {
  it('answers Retry-After from the error itself, in whole seconds rounded up', () => {
    const idem = createIdempotency({ store: createMemoryStore() });
    const neutral = { method: 'POST', url: '/pay', header: () => undefined, body: async () => null };
    const waits = idem.formatError(new IdempotencyUpstreamUnreachableError('down', { retryAfterMs: 2_500 }), neutral);
    expect(waits.status).toBe(502);
    expect(waits.headers).toContainEqual(['retry-after', '3']);
    const plain = idem.formatError(new IdempotencyHandlerFailedError('failed'), neutral);
    expect(plain.headers.map(([name]) => name)).not.toContain('retry-after');
  });

  it('gives a handler’s thrown idempo error its status and its Retry-After', async () => {
    const idem = createIdempotency({ store: createMemoryStore() });
    const res = await idem.handle(request('thrown-1'), async () => {
      throw new IdempotencyUpstreamUnreachableError('The upstream could not be reached; nothing was sent.', {
        retryAfterMs: 1_000,
      });
    });
    expect(res.status).toBe(502);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await res.json()).code).toBe('IDEMPO_UPSTREAM_UNREACHABLE');
  });
});
