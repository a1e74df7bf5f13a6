/** The Express middleware's own surface, against real loopback servers. */
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { Readable } from 'node:stream';
import express from 'express';
import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { idempotency as expressIdempotency } from '../../src/adapters/express.js';
import { createIdempotency } from '../../src/engine/engine.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import type { RunningServer } from './servers/app.js';
import { listen } from './servers/listen.js';

let server: RunningServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

async function post(path: string, key: string, body = '{"a":1}', contentType = 'application/json') {
  const response = await request(`${server?.url}${path}`, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': contentType },
    body,
  });
  return { status: response.statusCode, headers: response.headers, text: await response.body.text() };
}

describe('express middleware', () => {
  it('fingerprints the full path under a mount point, not the part the router sees', async () => {
    const app = express();
    app.use('/api', expressIdempotency({ store: createMemoryStore() }));
    app.post('/api/:thing', (req, res) => {
      res.status(201).json({ thing: req.params.thing });
    });
    server = await listen(createServer(app));
    const key = randomUUID();
    expect((await post('/api/a', key)).status).toBe(201);
    expect((await post('/api/b', key)).status).toBe(422);
  });

  for (const order of [
    ['/sub/b', '/a', '/sub/b', '/a'],
    ['/a', '/sub/b', '/a', '/sub/b'],
  ]) {
    for (const parserFirst of [true, false]) {
      it(`ends and replays responses of a parent app and its sub-app, both protected (${order.slice(0, 2).join(' first, then ')}; idempo ${parserFirst ? 'after' : 'before'} express.json())`, async () => {
        // A sub-app's app.request and app.response inherit from its parent app's, so the
        // capturing methods can sit on both prototypes of one response.
        const store = createMemoryStore();
        const chain = () =>
          parserFirst
            ? [express.json(), expressIdempotency({ store })]
            : [expressIdempotency({ store }), express.json()];
        const runs: string[] = [];
        const app = express();
        const sub = express();
        app.post('/a', ...chain(), (req, res) => {
          runs.push('a');
          res.status(201).json({ app: 'parent', got: req.body });
        });
        sub.post('/b', ...chain(), (req, res) => {
          runs.push('b');
          res.status(201).json({ app: 'sub', got: req.body });
        });
        app.use('/sub', sub);
        server = await listen(createServer(app));
        // Each path twice with a fresh key, so each app captures once the other's methods are in place.
        for (const path of order) {
          const key = randomUUID();
          for (const replay of [false, true]) {
            const response = await post(path, key, '{"x":1}');
            expect(response.status).toBe(201);
            expect(JSON.parse(response.text)).toEqual({ app: path === '/a' ? 'parent' : 'sub', got: { x: 1 } });
            expect(response.headers['idempotent-replayed']).toBe(replay ? 'true' : undefined);
          }
        }
        expect(runs.sort()).toEqual(['a', 'a', 'b', 'b']);
      });
    }
  }

  it('runs once when mounted twice on one request, and shares an engine passed as { idempotency }', async () => {
    const engine = createIdempotency({ store: createMemoryStore() });
    const app = express();
    let runs = 0;
    app.use(expressIdempotency({ idempotency: engine }));
    const router = express.Router();
    router.use(expressIdempotency({ idempotency: engine }));
    router.post('/twice', (_req, res) => {
      runs++;
      res.status(201).send('ok');
    });
    app.use(router);
    server = await listen(createServer(app));
    const key = randomUUID();
    expect((await post('/twice', key)).status).toBe(201);
    expect((await post('/twice', key)).headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });

  it('hands a body it read to a parser of another type mounted after it (express.text)', async () => {
    const app = express();
    app.use(expressIdempotency({ store: createMemoryStore() }));
    app.use(express.text());
    app.post('/text', (req, res) => {
      res.status(201).send(`got ${req.body as string}`);
    });
    server = await listen(createServer(app));
    const key = randomUUID();
    const first = await post('/text', key, 'hello', 'text/plain');
    expect(first.text).toBe('got hello');
    expect((await post('/text', key, 'hello!', 'text/plain')).status).toBe(422);
  });

  it('refuses to guess when something read the body and left nothing in req.body', async () => {
    const app = express();
    app.use((req, _res, next) => {
      req.resume();
      req.on('end', () => next());
    });
    app.use(expressIdempotency({ store: createMemoryStore() }));
    app.post('/lost', (_req, res) => {
      res.send('ran');
    });
    app.use(
      (error: Error & { code?: string }, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
        res.status(500).send(error.code);
      },
    );
    server = await listen(createServer(app));
    const reply = await post('/lost', randomUUID());
    expect(reply.status).toBe(500);
    expect(reply.text).toBe('IDEMPO_CONFIG_INVALID');
  });

  // Express swaps the prototype of every req and res, and V8 then builds a new hidden class for
  // every property added to one: idempo works through app.request and app.response instead.
  it.each([
    ['after', true],
    ['before', false],
  ])(
    'adds nothing to req or res when mounted %s express.json(), and leaves unkeyed routes untouched',
    async (_, parserFirst) => {
      const app = express();
      if (parserFirst) app.use(express.json({ limit: '1mb' }));
      let before: (string | symbol)[] = [];
      app.use((req, _res, next) => {
        before = Reflect.ownKeys(req);
        next();
      });
      app.use(expressIdempotency({ store: createMemoryStore(), maxBodyBytes: 1_000_000 }));
      let addedByIdempo: (string | symbol)[] = [];
      app.use((req, _res, next) => {
        // Listening on a request adds `_eventsCount`, which the body parser would add anyway.
        addedByIdempo = Reflect.ownKeys(req).filter((name) => !before.includes(name) && name !== '_eventsCount');
        next();
      });
      if (!parserFirst) app.use(express.json({ limit: '1mb' }));
      let runs = 0;
      let added: (string | symbol)[] = [];
      app.post('/pay', (req, res) => {
        runs++;
        added = [
          ...addedByIdempo,
          ...(['writeHead', 'write', 'end'] as const).filter((name) => Object.hasOwn(res, name)),
          ...Reflect.ownKeys(req).filter((name) => typeof name === 'symbol' && name.description?.startsWith('idempo')),
        ];
        res.status(201).json({ key: req.idempotency?.key, runs, size: JSON.stringify(req.body).length });
      });
      app.get('/plain', (_req, res) => {
        res.write('a');
        res.end('b');
      });
      server = await listen(createServer(app));
      const key = randomUUID();
      const first = await post('/pay', key);
      expect(first.status).toBe(201);
      expect(JSON.parse(first.text)).toEqual({ key, runs: 1, size: 7 });
      expect(added).toEqual([]);
      const replay = await post('/pay', key);
      expect(replay.headers['idempotent-replayed']).toBe('true');
      expect(replay.text).toBe(first.text);
      expect(runs).toBe(1);
      // A body past the stream's high-water mark, and one of unknown length, are read another way.
      const large = JSON.stringify({ pad: 'x'.repeat(100_000) });
      const largeReply = await post('/pay', randomUUID(), large);
      expect([largeReply.status, JSON.parse(largeReply.text).size]).toEqual([201, large.length]);
      expect(added).toEqual([]);
      const chunked = await request(`${server.url}/pay`, {
        method: 'POST',
        headers: { 'idempotency-key': randomUUID(), 'content-type': 'application/json' },
        body: Readable.from(['{"a":', '1}']),
      });
      expect(JSON.parse(await chunked.body.text())).toMatchObject({ runs: 3, size: 7 });
      expect(added).toEqual([]);
      const plain = await request(`${server.url}/plain`);
      expect(await plain.body.text()).toBe('ab');
    },
  );

  it('wraps methods an earlier middleware put on the response, storing what the handler wrote', async () => {
    const app = express();
    // A compression-like wrapper mounted before idempo: it transforms what reaches the socket.
    app.use((_req, res, next) => {
      const end = res.end.bind(res);
      res.setHeader('x-wrapped', 'yes');
      res.end = ((chunk?: string | Buffer) => end(String(chunk ?? '').toUpperCase())) as typeof res.end;
      next();
    });
    app.use(express.json());
    app.use(expressIdempotency({ store: createMemoryStore() }));
    let runs = 0;
    app.post('/shout', (_req, res) => {
      runs++;
      res.status(201).end('quiet');
    });
    server = await listen(createServer(app));
    const key = randomUUID();
    const first = await post('/shout', key);
    const replay = await post('/shout', key);
    expect([first.status, first.text, first.headers['x-wrapped']]).toEqual([201, 'QUIET', 'yes']);
    expect([replay.status, replay.text, replay.headers['x-wrapped']]).toEqual([201, 'QUIET', 'yes']);
    expect(replay.headers['idempotent-replayed']).toBe('true');
    expect(runs).toBe(1);
  });
});
