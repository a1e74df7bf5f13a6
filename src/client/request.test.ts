import { afterEach, describe, expect, it } from 'vitest';
import { sequence, startTestServer, status, type TestServer } from '../../test/client/server.js';
import { createIdempotentFetch } from './index.js';

let server: TestServer | undefined;

afterEach(async () => {
  await server?.close();
  server = undefined;
});

/** A server that fails twice, then accepts: every body must arrive three times, identical. */
async function sendThrice(init?: RequestInit, input: (url: string) => string | Request = (url) => url) {
  server = await startTestServer(sequence(status(503), status(502), status(201)));
  const { url, requests } = server;
  const response = await createIdempotentFetch({ retry: { delay: () => 0, jitter: false } })(
    input(`${url}/upload`),
    init,
  );
  expect(response.status).toBe(201);
  expect(requests).toHaveLength(3);
  return requests;
}

function stream(...parts: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    pull(controller) {
      const part = parts.shift();
      if (part === undefined) controller.close();
      else controller.enqueue(encoder.encode(part));
    },
  });
}

function bodies(requests: { body: Buffer }[]): string[] {
  return requests.map((r) => r.body.toString('utf8'));
}

describe('the body is re-sent on every attempt', () => {
  it('string, with the Content-Type fetch would add', async () => {
    const requests = await sendThrice({ method: 'POST', body: 'héllo' });
    expect(bodies(requests)).toEqual(['héllo', 'héllo', 'héllo']);
    expect(requests.map((r) => r.headers['content-type'])).toEqual(Array(3).fill('text/plain;charset=UTF-8'));
  });

  it('keeps a Content-Type the caller set', async () => {
    const requests = await sendThrice({
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"amount":1}',
    });
    expect(requests.map((r) => r.headers['content-type'])).toEqual(Array(3).fill('application/json'));
  });

  it('Uint8Array', async () => {
    const bytes = new Uint8Array([0, 1, 2, 250, 255]);
    const requests = await sendThrice({ method: 'PATCH', body: bytes });
    for (const r of requests) expect([...r.body]).toEqual([0, 1, 2, 250, 255]);
  });

  it('ReadableStream, read once and buffered', async () => {
    const requests = await sendThrice({
      method: 'POST',
      body: stream('chunk one, ', 'chunk two'),
      duplex: 'half',
    } as RequestInit);
    expect(bodies(requests)).toEqual(Array(3).fill('chunk one, chunk two'));
  });

  it('URLSearchParams and Blob', async () => {
    const form = await sendThrice({ method: 'POST', body: new URLSearchParams({ a: '1', b: 'two' }) });
    expect(bodies(form)).toEqual(Array(3).fill('a=1&b=two'));
    expect(form[2]?.headers['content-type']).toBe('application/x-www-form-urlencoded;charset=UTF-8');
    await server?.close();

    const blob = await sendThrice({ method: 'POST', body: new Blob(['blob'], { type: 'application/x-blob' }) });
    expect(bodies(blob)).toEqual(Array(3).fill('blob'));
    expect(blob[2]?.headers['content-type']).toBe('application/x-blob');
  });

  it('FormData, with one multipart boundary across attempts', async () => {
    const data = new FormData();
    data.set('amount', '100');
    data.set('receipt', new Blob(['%PDF'], { type: 'application/pdf' }), 'receipt.pdf');
    const requests = await sendThrice({ method: 'POST', body: data });

    const types = new Set(requests.map((r) => r.headers['content-type']));
    expect(types.size).toBe(1);
    expect([...types][0]).toMatch(/^multipart\/form-data; boundary=/);
    expect(new Set(bodies(requests)).size).toBe(1);
    expect(bodies(requests)[0]).toContain('%PDF');
  });

  it('Request input, with its method, headers and body', async () => {
    const requests = await sendThrice(
      undefined,
      (url) => new Request(url, { method: 'POST', headers: { 'x-trace': 't1' }, body: 'from a Request' }),
    );
    expect(bodies(requests)).toEqual(Array(3).fill('from a Request'));
    expect(requests.map((r) => [r.method, r.headers['x-trace']])).toEqual(Array(3).fill(['POST', 't1']));
    expect(new Set(requests.map((r) => r.headers['idempotency-key'])).size).toBe(1);
  });

  it('Request input with a stream body', async () => {
    const requests = await sendThrice(
      undefined,
      (url) =>
        new Request(url, { method: 'POST', body: stream('streamed ', 'request'), duplex: 'half' } as RequestInit),
    );
    expect(bodies(requests)).toEqual(Array(3).fill('streamed request'));
  });

  it('Request input whose body init replaces', async () => {
    const requests = await sendThrice({ body: 'new' }, (url) => new Request(url, { method: 'POST', body: 'old' }));
    expect(bodies(requests)).toEqual(Array(3).fill('new'));
  });

  it('refuses a Request whose body was already read, as fetch does', async () => {
    server = await startTestServer(status(200));
    const request = new Request(server.url, { method: 'POST', body: 'x' });
    await request.text();
    await expect(createIdempotentFetch()(request)).rejects.toThrow(TypeError);
    expect(server.requests).toHaveLength(0);
  });

  it('sends no body when there is none', async () => {
    const requests = await sendThrice({ method: 'POST' });
    expect(requests.map((r) => [r.body.length, r.headers['content-length'] ?? '0'])).toEqual(Array(3).fill([0, '0']));
  });
});
