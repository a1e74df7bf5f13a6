import { Readable } from 'node:stream';
import Fastify, { type FastifyRequest } from 'fastify';
import { idempotency } from '../../../src/adapters/fastify.js';
import { type ServerFactory, STREAM_CHUNKS, sleep } from './app.js';

/** Fastify 5 with the plugin registered globally and its own JSON parser and bodyLimit. */
export const startFastify: ServerFactory = async (app, options) => {
  // Closing drops every connection: a test that aborts requests can leave the client's pool with a
  // socket that never sent one, which Fastify's default close (idle connections only) waits for.
  const server = Fastify({ forceCloseConnections: true });
  await server.register(idempotency, options);
  const key = (request: FastifyRequest) => request.headers['idempotency-key'] as string | undefined;

  const orders = async (request: FastifyRequest) => ({
    n: app.count('orders', key(request)),
    key: request.idempotency.key,
    body: request.body ?? null,
  });
  server.get('/orders', async (request, reply) => reply.header('x-custom', 'orders').send(await orders(request)));
  server.post('/orders', async (request, reply) =>
    reply
      .code(201)
      .header('x-custom', 'orders')
      .send(await orders(request)),
  );
  server.post('/slow', async (request, reply) => {
    const n = app.count('slow', key(request));
    await app.gate();
    return reply.code(201).send({ n });
  });
  server.post('/first-held', async (request, reply) => {
    const n = app.count('first-held', key(request));
    if (n === 1) await app.gate();
    return reply.code(201).send({ n });
  });
  server.post('/flaky', async (request, reply) => {
    const n = app.count('flaky', key(request));
    if (n % 2 === 1) throw new Error('flaky handler failed');
    return reply.code(201).send({ n });
  });
  server.post('/unavailable', async (request, reply) => {
    const n = app.count('unavailable', key(request));
    return reply.code(n % 2 === 1 ? 503 : 201).send({ n });
  });
  server.post('/stream', async (request, reply) => {
    app.count('stream', key(request));
    const body = Readable.from(
      (async function* chunks() {
        for (const chunk of STREAM_CHUNKS) {
          yield Buffer.from(chunk);
          await sleep(2);
        }
      })(),
    );
    return reply.code(200).type('text/plain; charset=utf-8').header('x-custom', 'stream').send(body);
  });
  await server.listen({ port: 0, host: '127.0.0.1' });
  const address = server.server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  return { url: `http://127.0.0.1:${port}`, close: () => server.close() };
};
