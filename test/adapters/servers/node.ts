import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import { idempotencyContext, idempotent } from '../../../src/adapters/node.js';
import { createIdempotency } from '../../../src/engine/engine.js';
import { KEY_HEADER, type ServerFactory, STREAM_CHUNKS, sleep } from './app.js';
import { listen } from './listen.js';

/** The reference adapter: a plain node:http listener wrapped by `idempotent()`. */
export const startNode: ServerFactory = (app, options) => {
  const idem = createIdempotency(options);
  const json = (res: ServerResponse, status: number, value: unknown, extra: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...extra }).end(JSON.stringify(value));
  };
  const readJson = async (req: IncomingMessage): Promise<unknown> => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    return text === '' ? null : JSON.parse(text);
  };
  const server = http.createServer(
    idempotent(idem, async (req, res) => {
      const key = req.headers[KEY_HEADER] as string | undefined;
      const route = (req.url ?? '/').split('?')[0]?.slice(1) ?? '';
      let body: unknown;
      try {
        body = await readJson(req);
      } catch {
        return json(res, 400, { error: 'invalid json' });
      }
      if (route === 'orders') {
        const n = app.count('orders', key);
        return json(
          res,
          req.method === 'GET' ? 200 : 201,
          { n, key: idempotencyContext(req)?.key ?? '', body },
          {
            'x-custom': 'orders',
          },
        );
      }
      if (route === 'slow') {
        const n = app.count('slow', key);
        await app.gate();
        return json(res, 201, { n });
      }
      if (route === 'first-held') {
        const n = app.count('first-held', key);
        if (n === 1) await app.gate();
        return json(res, 201, { n });
      }
      if (route === 'flaky') {
        const n = app.count('flaky', key);
        if (n % 2 === 1) throw new Error('flaky handler failed');
        return json(res, 201, { n });
      }
      if (route === 'unavailable') {
        const n = app.count('unavailable', key);
        return json(res, n % 2 === 1 ? 503 : 201, { n });
      }
      if (route === 'stream') {
        app.count('stream', key);
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'x-custom': 'stream' });
        for (const chunk of STREAM_CHUNKS) {
          res.write(chunk);
          await sleep(2);
        }
        res.end();
        return;
      }
      json(res, 404, { error: 'not found' });
    }),
  );
  return listen(server);
};
