/**
 * Found by the faces fuzzer (faces.test.ts), in the Fastify adapter: when Fastify refused a
 * request before it parsed the body (415 for an unparseable Content-Type) and the body was larger
 * than a stream buffer, the idempo plugin's preParsing tee held the request stream, node:http
 * could not drain it, and the next request on that kept-alive connection was never answered.
 * `recordBody` now gives an unread request back to node:http when the response finishes.
 */
import { Agent, type Agent as HttpAgent, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import Fastify from 'fastify';
import { expect, it } from 'vitest';
import { idempotency } from '../../src/adapters/fastify.js';
import { createMemoryStore } from '../../src/stores/memory.js';

function send(agent: HttpAgent, url: string, contentType: string, body: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const req = httpRequest(
      url,
      {
        agent,
        method: 'POST',
        headers: {
          'content-type': contentType,
          'idempotency-key': `k-${Math.random()}`,
          'content-length': body.length,
        },
      },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', () => resolve(-1));
    req.setTimeout(2_000, () => {
      req.destroy();
      resolve(0);
    });
    req.end(body);
  });
}

it('answers the next request on a kept-alive connection after refusing a large body unread', async () => {
  const app = Fastify({ forceCloseConnections: true, bodyLimit: 2_097_152 });
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  await app.register(idempotency, { store: createMemoryStore() });
  app.post('/*', async () => 'ok');
  await app.listen({ port: 0, host: '127.0.0.1' });
  const url = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}/p`;
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    expect(await send(agent, url, '.]', Buffer.alloc(630_000, 0x20))).toBe(415);
    expect(await send(agent, url, 'text/plain', Buffer.from('hi'))).toBe(200);
  } finally {
    agent.destroy();
    await app.close();
  }
});
