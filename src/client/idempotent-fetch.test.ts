import { fetch as undiciFetch } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import {
  drop,
  hang,
  type Reply,
  sequence,
  startTestServer,
  status,
  type TestServer,
} from '../../test/client/server.js';
import { IdempotencyConfigInvalidError, IdempotencyError } from '../vocabulary/index.js';
import {
  createIdempotentFetch,
  type FailedAttemptContext,
  IdempotencyRetriesExhaustedError,
  type IdempotentFetchOptions,
  type RetryContext,
} from './index.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Retries at once, so tests spend no time in backoff unless they mean to. */
const fast = { delay: () => 0, jitter: false } as const;

let server: TestServer | undefined;

async function serve(reply: Reply): Promise<TestServer> {
  server = await startTestServer(reply);
  return server;
}

afterEach(async () => {
  await server?.close();
  server = undefined;
});

function client(options: IdempotentFetchOptions = {}) {
  return createIdempotentFetch({
    ...options,
    retry: { ...fast, ...(typeof options.retry === 'object' ? options.retry : {}) },
  });
}

describe('Idempotency-Key', () => {
  it('generates one key per call and sends it on every attempt', async () => {
    const { url, requests } = await serve(sequence(status(503), drop, status(201)));
    const response = await client()(`${url}/payments`, { method: 'POST', body: '{"amount":100}' });

    expect(response.status).toBe(201);
    expect(requests).toHaveLength(3);
    const keys = requests.map((r) => r.headers['idempotency-key']);
    expect(keys[0]).toMatch(UUID);
    expect(new Set(keys).size).toBe(1);
  });

  it('uses a fresh key for each logical call', async () => {
    const { url, requests } = await serve(status(201));
    const idempotentFetch = client();
    await idempotentFetch(`${url}/payments`, { method: 'POST', body: 'a' });
    await idempotentFetch(`${url}/payments`, { method: 'POST', body: 'a' });

    const [first, second] = requests.map((r) => r.headers['idempotency-key']);
    expect(first).toMatch(UUID);
    expect(second).toMatch(UUID);
    expect(first).not.toBe(second);
  });

  it('keeps a key the caller set, in init headers or on a Request', async () => {
    const { url, requests } = await serve(sequence(status(500), status(201)));
    const idempotentFetch = client();
    await idempotentFetch(`${url}/a`, { method: 'POST', headers: { 'Idempotency-Key': 'order-42' }, body: 'x' });
    await idempotentFetch(
      new Request(`${url}/b`, { method: 'POST', headers: { 'idempotency-key': 'order-43' }, body: 'y' }),
    );

    expect(requests.map((r) => [r.url, r.headers['idempotency-key']])).toEqual([
      ['/a', 'order-42'],
      ['/a', 'order-42'],
      ['/b', 'order-43'],
    ]);
  });

  it('adds keys to POST and PATCH only, by default', async () => {
    const { url, requests } = await serve(status(200));
    const idempotentFetch = client();
    for (const method of ['GET', 'PUT', 'DELETE', 'post', 'PATCH']) await idempotentFetch(url, { method });

    expect(requests.map((r) => [r.method, r.headers['idempotency-key'] !== undefined])).toEqual([
      ['GET', false],
      ['PUT', false],
      ['DELETE', false],
      ['POST', true],
      ['PATCH', true],
    ]);
  });

  it('takes keyMethods, keyHeader and generateKey', async () => {
    const { url, requests } = await serve(status(200));
    let n = 0;
    const idempotentFetch = client({ keyMethods: ['put'], keyHeader: 'X-Request-Key', generateKey: () => `k${++n}` });
    await idempotentFetch(url, { method: 'PUT' });
    await idempotentFetch(url, { method: 'POST' });

    expect(requests.map((r) => r.headers['x-request-key'])).toEqual(['k1', undefined]);
    expect(requests.every((r) => r.headers['idempotency-key'] === undefined)).toBe(true);
  });
});

describe('what is retried', () => {
  it.each([408, 409, 425, 429, 500, 502, 503, 504])('retries status %i', async (code) => {
    const { url, requests } = await serve(sequence(status(code), status(201)));
    const response = await client()(url, { method: 'POST', body: 'x' });

    expect(response.status).toBe(201);
    expect(requests).toHaveLength(2);
  });

  it.each([400, 401, 403, 404, 410, 413, 422])('returns status %i at once, body intact', async (code) => {
    const { url, requests } = await serve(status(code));
    const response = await client()(url, { method: 'POST', body: 'x' });

    expect(response.status).toBe(code);
    expect(await response.json()).toEqual({ status: code, attempt: 1 });
    expect(requests).toHaveLength(1);
  });

  it('retries network errors with the same key', async () => {
    const { url, requests } = await serve(sequence(drop, drop, status(201)));
    const response = await client()(url, { method: 'POST', body: 'x' });

    expect(response.status).toBe(201);
    expect(requests).toHaveLength(3);
    expect(new Set(requests.map((r) => r.headers['idempotency-key'])).size).toBe(1);
  });

  it('takes statusCodes and methods', async () => {
    const { url, requests } = await serve(sequence(status(503), status(418), status(200)));
    const idempotentFetch = client({ retry: { statusCodes: [418], methods: ['get'] } });

    expect((await idempotentFetch(url, { method: 'POST' })).status).toBe(503);
    expect((await idempotentFetch(url)).status).toBe(200);
    expect(requests.map((r) => r.method)).toEqual(['POST', 'GET', 'GET']);
  });

  it('passes a network error through untouched for a method it does not retry', async () => {
    const { url, requests } = await serve(drop);
    const error = await client({ retry: { methods: ['GET'] } })(url, { method: 'POST' }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(TypeError);
    expect(requests).toHaveLength(1);
  });
});

describe('when it stops', () => {
  it('stops after limit retries and returns the last response, body unread', async () => {
    const { url, requests } = await serve(status(503));
    const response = await client({ retry: { limit: 2 } })(url, { method: 'POST' });

    expect(requests).toHaveLength(3);
    expect(response.status).toBe(503);
    expect(await response.json()).toEqual({ status: 503, attempt: 3 });
  });

  it('takes a number as the limit, and 0 turns retrying off', async () => {
    const { url, requests } = await serve(status(503));
    await createIdempotentFetch({ retry: 0 })(url, { method: 'POST' });
    await createIdempotentFetch({ retry: 1 })(url, { method: 'POST' });
    expect(requests).toHaveLength(3);
  });

  it('rejects with a coded error carrying the key when network errors exhaust the retries', async () => {
    const { url, requests } = await serve(drop);
    const error = await client({ retry: { limit: 2 } })(url, { method: 'POST', body: 'x' }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(IdempotencyRetriesExhaustedError);
    expect(error).toBeInstanceOf(IdempotencyError);
    const exhausted = error as IdempotencyRetriesExhaustedError;
    expect(exhausted.code).toBe('IDEMPO_RETRIES_EXHAUSTED');
    expect(exhausted.attempts).toBe(3);
    expect(exhausted.idempotencyKey).toBe(requests[0]?.headers['idempotency-key']);
    expect(exhausted.cause).toBeInstanceOf(TypeError);
    expect(requests).toHaveLength(3);
  });

  it('starts no retry after maxRetryTime', async () => {
    const { url, requests } = await serve(status(503));
    // Attempt 1 then a 1 s wait fit in 1.5 s; attempt 2 then another 1 s wait do not.
    const response = await client({ retry: { limit: 10, delay: () => 1000, maxRetryTime: 1500 } })(url, {
      method: 'POST',
    });

    expect(response.status).toBe(503);
    expect(requests).toHaveLength(2);
  });

  it('does not wait when the wait alone would overrun maxRetryTime', async () => {
    const { url, requests } = await serve(status(503, { 'retry-after': '5' }));
    const response = await client({ retry: { maxRetryTime: 1000 } })(url, { method: 'POST' });

    expect(response.status).toBe(503);
    expect(requests).toHaveLength(1);
  });

  it('refuses bad options at creation', () => {
    expect(() => createIdempotentFetch({ retry: { limit: -1 } })).toThrow(IdempotencyConfigInvalidError);
    expect(() => createIdempotentFetch({ retry: { backoffLimit: Number.NaN } })).toThrow(IdempotencyConfigInvalidError);
    expect(() => createIdempotentFetch({ timeout: -5 })).toThrow(IdempotencyConfigInvalidError);
  });

  it('raises requests fetch would refuse once, without sending or retrying them', async () => {
    const { url, requests } = await serve(status(200));
    const idempotentFetch = client();

    await expect(idempotentFetch(url, { method: 'GET', body: 'x' })).rejects.toThrow(TypeError);
    await expect(idempotentFetch('not a url', { method: 'POST' })).rejects.toThrow(TypeError);
    await expect(idempotentFetch(url, { method: 'PO ST' })).rejects.toThrow(TypeError);
    expect(requests).toHaveLength(0);
  });
});

describe('Retry-After', () => {
  function recordDelays(): { delays: number[]; onRetry: (context: RetryContext) => void } {
    const delays: number[] = [];
    return { delays, onRetry: (context) => void delays.push(context.delay) };
  }

  it('waits the seconds the server asks for, not the backoff', async () => {
    const { url, requests } = await serve(sequence(status(503, { 'retry-after': '1' }), status(201)));
    const { delays, onRetry } = recordDelays();
    const response = await client({ onRetry, retry: { delay: () => 60_000 } })(url, { method: 'POST' });

    expect(response.status).toBe(201);
    expect(delays).toEqual([1000]);
    expect(requests).toHaveLength(2);
  });

  it('honours Retry-After: 0 on 429', async () => {
    const { url } = await serve(sequence(status(429, { 'retry-after': '0' }), status(200)));
    const { delays, onRetry } = recordDelays();
    await client({ onRetry, retry: { delay: () => 60_000 } })(url, { method: 'POST' });
    expect(delays).toEqual([0]);
  });

  it('caps seconds at maxRetryAfter', async () => {
    const { url } = await serve(sequence(status(503, { 'retry-after': '3600' }), status(201)));
    const { delays, onRetry } = recordDelays();
    const response = await client({ onRetry, retry: { maxRetryAfter: 50 } })(url, { method: 'POST' });

    expect(response.status).toBe(201);
    expect(delays).toEqual([50]);
  });

  it('waits until an HTTP date', async () => {
    // toUTCString() drops milliseconds, so the wait lands between 1 and 2 seconds.
    const at = (): string => new Date(Date.now() + 2000).toUTCString();
    const { url } = await serve(
      sequence((res, seen, i) => status(503, { 'retry-after': at() })(res, seen, i), status(201)),
    );
    const { delays, onRetry } = recordDelays();
    const response = await client({ onRetry })(url, { method: 'POST' });

    expect(response.status).toBe(201);
    expect(delays).toHaveLength(1);
    expect(delays[0]).toBeGreaterThan(0);
    expect(delays[0]).toBeLessThanOrEqual(2000);
  });

  it('caps an HTTP date at maxRetryAfter, and treats a past date as now', async () => {
    const future = new Date(Date.now() + 3_600_000).toUTCString();
    const past = new Date(Date.now() - 3_600_000).toUTCString();
    const { url } = await serve(
      sequence(status(503, { 'retry-after': future }), status(503, { 'retry-after': past }), status(201)),
    );
    const { delays, onRetry } = recordDelays();
    await client({ onRetry, retry: { maxRetryAfter: 40 } })(url, { method: 'POST' });

    expect(delays).toEqual([40, 0]);
  });

  it('falls back to the backoff when Retry-After is unreadable', async () => {
    const { url } = await serve(sequence(status(503, { 'retry-after': 'later' }), status(201)));
    const { delays, onRetry } = recordDelays();
    await client({ onRetry, retry: { delay: () => 7 } })(url, { method: 'POST' });
    expect(delays).toEqual([7]);
  });
});

describe('abort', () => {
  it('stops mid-backoff with the request signal’s reason, without another attempt', async () => {
    const { url, requests } = await serve(status(503, { 'retry-after': '30' }));
    const controller = new AbortController();
    const reason = new Error('user gave up');
    const pending = client({ onRetry: () => void setTimeout(() => controller.abort(reason), 20) })(url, {
      method: 'POST',
      signal: controller.signal,
    });

    await expect(pending).rejects.toBe(reason);
    expect(requests).toHaveLength(1);
  });

  it('stops mid-backoff on the signal option (p-retry style)', async () => {
    const { url, requests } = await serve(drop);
    const controller = new AbortController();
    const pending = client({
      signal: controller.signal,
      retry: { delay: () => 30_000 },
      onRetry: () => void setTimeout(() => controller.abort(), 20),
    })(url, { method: 'POST' });

    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(requests).toHaveLength(1);
  });

  it('stops mid-attempt, as fetch does', async () => {
    const { url, requests } = await serve(hang);
    const controller = new AbortController();
    const pending = client()(url, { method: 'POST', body: 'x', signal: controller.signal });
    while (requests.length === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    controller.abort();

    await expect(pending).rejects.toMatchObject({ name: 'AbortError' });
    expect(requests).toHaveLength(1);
  });

  it('sends nothing when the signal is already aborted', async () => {
    const { url, requests } = await serve(status(200));
    await expect(client()(url, { method: 'POST', signal: AbortSignal.abort() })).rejects.toMatchObject({
      name: 'AbortError',
    });
    expect(requests).toHaveLength(0);
  });

  it('retries an attempt that exceeds timeout, with the same key', async () => {
    const { url, requests } = await serve(sequence(hang, status(201)));
    const response = await client({ timeout: 200 })(url, { method: 'POST', body: 'x' });

    expect(response.status).toBe(201);
    expect(requests).toHaveLength(2);
    expect(requests[0]?.headers['idempotency-key']).toBe(requests[1]?.headers['idempotency-key']);
  });

  it('does not cut a slow body short: timeout covers the headers only', async () => {
    const { url } = await serve((res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first ');
      setTimeout(() => res.end('second'), 300);
    });
    const response = await client({ timeout: 100 })(url, { method: 'POST' });
    expect(await response.text()).toBe('first second');
  });
});

describe('hooks', () => {
  it('calls onFailedAttempt after every failed attempt and onRetry before every retry', async () => {
    const { url, requests } = await serve(sequence(drop, status(503), status(503)));
    const failed: unknown[] = [];
    const retries: unknown[] = [];
    const summarize = ({
      attemptNumber,
      retriesLeft,
      response,
      error,
      idempotencyKey,
      method,
    }: FailedAttemptContext) => ({
      attemptNumber,
      retriesLeft,
      status: response?.status,
      error: error !== undefined,
      idempotencyKey,
      method,
    });
    const response = await client({
      retry: { limit: 2, delay: (n) => n * 3 },
      onFailedAttempt: (context) => void failed.push(summarize(context)),
      onRetry: ({ retryCount, delay }) => void retries.push({ retryCount, delay }),
    })(`${url}/payments`, { method: 'POST' });

    const key = requests[0]?.headers['idempotency-key'];
    expect(response.status).toBe(503);
    expect(failed).toEqual([
      { attemptNumber: 1, retriesLeft: 2, status: undefined, error: true, idempotencyKey: key, method: 'POST' },
      { attemptNumber: 2, retriesLeft: 1, status: 503, error: false, idempotencyKey: key, method: 'POST' },
      { attemptNumber: 3, retriesLeft: 0, status: 503, error: false, idempotencyKey: key, method: 'POST' },
    ]);
    expect(retries).toEqual([
      { retryCount: 1, delay: 3 },
      { retryCount: 2, delay: 6 },
    ]);
  });

  it('stops with the error onFailedAttempt throws', async () => {
    const { url, requests } = await serve(status(503));
    const stop = new Error('stop');
    const pending = client({
      onFailedAttempt: () => {
        throw stop;
      },
    })(url, { method: 'POST' });

    await expect(pending).rejects.toBe(stop);
    expect(requests).toHaveLength(1);
  });

  it('stops when shouldRetry says no', async () => {
    const { url, requests } = await serve(sequence(status(503), status(429)));
    const response = await client({ retry: { shouldRetry: ({ response }) => response?.status !== 429 } })(url, {
      method: 'POST',
    });

    expect(response.status).toBe(429);
    expect(requests).toHaveLength(2);
  });

  it('leaves a non-retryable response alone: no hook runs', async () => {
    const { url } = await serve(status(422));
    let calls = 0;
    await client({ onFailedAttempt: () => void calls++, onRetry: () => void calls++ })(url, { method: 'POST' });
    expect(calls).toBe(0);
  });
});

describe('fetch implementations', () => {
  it('runs over undici’s fetch and passes init fields such as dispatcher through', async () => {
    const { Agent } = await import('undici');
    const dispatcher = new Agent({ connections: 1 });
    const { url, requests } = await serve(sequence(drop, status(201)));
    const response = await createIdempotentFetch({ fetch: undiciFetch, retry: fast })(url, {
      method: 'POST',
      body: 'x',
      dispatcher,
    } as RequestInit);

    expect(response.status).toBe(201);
    expect(requests).toHaveLength(2);
    expect(requests[1]?.body.toString()).toBe('x');
    await dispatcher.close();
  });

  it('calls the injected fetch on globalThis, so a browser’s fetch never throws "Illegal invocation"', async () => {
    const receivers: unknown[] = [];
    const fake = function (this: unknown) {
      receivers.push(this);
      return Promise.resolve(new Response('ok'));
    };
    await createIdempotentFetch({ fetch: fake })('http://127.0.0.1:9/', { method: 'POST' });
    expect(receivers).toEqual([globalThis]);
  });
});
