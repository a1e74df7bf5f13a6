import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, request as httpRequest } from 'node:http';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { promisify } from 'node:util';
import pino from 'pino';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Gateway, startGateway } from '../../src/gateway/index.js';
import { spawnGateway, startUpstream } from '../helpers/servers.js';

// The gateway in front of real HTTP clients: curl, undici, node:http, and raw sockets.
const run = promisify(execFile);
const LIMIT = 64 * 1024;
let upstream: Awaited<ReturnType<typeof startUpstream>>;
let gateway: Gateway;
/** A second gateway with short client timeouts, for the slow-client rows. */
let slow: Gateway;
const logs: Record<string, unknown>[] = [];
const dir = mkdtempSync(join(tmpdir(), 'idempo-clients-'));

beforeAll(async () => {
  upstream = await startUpstream((req, res, body) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/no-content') return void res.writeHead(204).end();
    if (url.pathname === '/not-modified') return void res.writeHead(304, { etag: '"v1"' }).end();
    if (url.pathname === '/trailers') {
      res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-checksum' });
      res.write('body');
      res.addTrailers({ 'x-checksum': 'abc' });
      return void res.end();
    }
    res.writeHead(req.method === 'POST' ? 201 : 200, {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(JSON.stringify({ size: body.length }))),
    });
    res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ size: body.length }));
  });
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
      done();
    },
  });
  gateway = await startGateway({
    upstream: upstream.url,
    port: 0,
    store: 'memory:',
    logger: pino({ level: 'info' }, sink),
    idempotency: { maxBodyBytes: LIMIT },
  });
  slow = await startGateway({
    upstream: upstream.url,
    port: 0,
    store: 'memory:',
    logger: pino({ level: 'info' }, sink),
    headersTimeout: '400ms',
    requestTimeout: '1500ms',
    keepAliveTimeout: '400ms',
  });
});

afterAll(async () => {
  await gateway.close();
  await slow.close();
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

const hits = (path: string) => upstream.hits.filter((h) => h.url === path);

/** A raw connection to the gateway that collects what comes back and how it ended. */
function raw(port = gateway.port) {
  const socket: Socket = connect(port, '127.0.0.1');
  let received = '';
  const waiters: { test: (text: string) => boolean; resolve: () => void }[] = [];
  socket.on('data', (chunk) => {
    received += chunk.toString('latin1');
    for (const waiter of [...waiters]) {
      if (waiter.test(received)) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  });
  const ended = new Promise<{ error: string | undefined }>((resolve) => {
    let error: string | undefined;
    socket.on('error', (e: NodeJS.ErrnoException) => {
      error = e.code ?? e.message;
    });
    socket.on('close', () => resolve({ error }));
  });
  return {
    socket,
    ended,
    text: () => received,
    until: (test: (text: string) => boolean) =>
      test(received) ? Promise.resolve() : new Promise<void>((resolve) => waiters.push({ test, resolve })),
  };
}

describe('real clients through the gateway', () => {
  it('curl: a 3 MiB unkeyed upload (curl adds Expect: 100-continue) streams through; a keyed one over the limit gets 413, not a reset', async () => {
    const file = join(dir, 'big.bin');
    writeFileSync(file, Buffer.alloc(3 * 1024 * 1024, 7));
    const unkeyed = await run('curl', [
      '-sS',
      '-w',
      '\n%{http_code}',
      '--data-binary',
      `@${file}`,
      `${gateway.url}/upload`,
    ]);
    const [body, status] = unkeyed.stdout.split('\n');
    expect(status).toBe('201');
    expect(JSON.parse(body as string)).toEqual({ size: 3 * 1024 * 1024 });

    const keyed = await run('curl', [
      '-sS',
      '-w',
      '\n%{http_code}',
      '-H',
      'Idempotency-Key: curl-big',
      '--data-binary',
      `@${file}`,
      `${gateway.url}/upload-keyed`,
    ]);
    expect(keyed.stdout.split('\n')[1]).toBe('413');
    expect(JSON.parse(keyed.stdout.split('\n')[0] as string).code).toBe('IDEMPO_BODY_TOO_LARGE');
    expect(hits('/upload-keyed')).toHaveLength(0);
  });

  it('curl: a keyed body within the limit with Expect: 100-continue runs once and replays', async () => {
    const file = join(dir, 'small.bin');
    writeFileSync(file, Buffer.alloc(40_000, 1));
    const args = [
      '-sS',
      '-i',
      '-H',
      'Expect: 100-continue',
      '-H',
      'Idempotency-Key: curl-expect',
      '--data-binary',
      `@${file}`,
    ];
    const first = await run('curl', [...args, `${gateway.url}/expect`]);
    expect(first.stdout).toMatch(/HTTP\/1\.1 100 Continue[\s\S]*HTTP\/1\.1 201/);
    const second = await run('curl', [...args, `${gateway.url}/expect`]);
    expect(second.stdout).toMatch(/idempotent-replayed: true/i);
    expect(hits('/expect')).toHaveLength(1);
    expect(hits('/expect')[0]?.headers.expect).toBeUndefined();
  });

  it('raw socket: a keyed Expect request over the limit gets its 413 without 100 Continue, and the connection closes cleanly', async () => {
    const client = raw();
    client.socket.write(
      `POST /expect-big HTTP/1.1\r\nHost: x\r\nIdempotency-Key: e-big\r\nContent-Length: ${LIMIT * 4}\r\nExpect: 100-continue\r\n\r\n`,
    );
    await client.until((text) => text.includes('IDEMPO_BODY_TOO_LARGE'));
    expect(client.text()).not.toMatch(/100 Continue/);
    expect(client.text()).toMatch(/^HTTP\/1\.1 413[\s\S]*connection: close/i);
    client.socket.end();
    expect((await client.ended).error).toBeUndefined();
  });

  it('raw socket: a client still sending a refused body gets the whole 413 and a clean close, never a reset', async () => {
    const client = raw();
    client.socket.write(
      `POST /refused HTTP/1.1\r\nHost: x\r\nIdempotency-Key: r-1\r\nContent-Length: ${50 * 1024 * 1024}\r\n\r\n`,
    );
    const chunk = Buffer.alloc(256 * 1024, 120);
    let sending = true;
    void (async () => {
      // Keep writing well past the answer, as a client uploading a large body does.
      for (let i = 0; i < 40 && sending && !client.socket.destroyed; i++) {
        if (!client.socket.write(chunk)) await new Promise((resolve) => client.socket.once('drain', resolve));
      }
      if (!client.socket.destroyed) client.socket.end();
    })();
    await client.until((text) => text.includes('IDEMPO_BODY_TOO_LARGE'));
    const { error } = await client.ended;
    sending = false;
    expect(error).toBeUndefined();
    expect(client.text()).toMatch(/^HTTP\/1\.1 413/);
    expect(hits('/refused')).toHaveLength(0);
  });

  it('keep-alive clients (undici and node:http) see no reset when one body in ten is over the limit (randomised, idempo serve in its own process)', async () => {
    // The gateway in a process of its own, as users run it: in this process, the clients and
    // the gateway share one event loop, and a 413 sent with Connection: close and no lingering
    // close met no reset in 3,600 requests; from another process, about 3% of all requests do.
    const served = await spawnGateway([
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      'memory:',
      '--max-body-bytes',
      String(LIMIT),
    ]);
    // Reported on failure: IDEMPO_TEST_SEED=<it> replays the same sizes.
    const initialSeed = Number(process.env.IDEMPO_TEST_SEED ?? Date.now() % 100_000);
    let seed = initialSeed;
    const random = () => {
      seed = (seed * 1_103_515_245 + 12_345) & 0x7fffffff;
      return seed / 0x7fffffff;
    };
    const undiciAgent = new Agent({ connections: 4, keepAliveTimeout: 30_000 });
    const nodeAgent = new HttpAgent({ keepAlive: true, maxSockets: 4 });
    const outcomes: Record<string, number> = {};
    const expected: Record<string, number> = {};
    const count = (what: string, into = outcomes) => {
      into[what] = (into[what] ?? 0) + 1;
    };
    const total = 400;
    let next = 0;
    const viaUndici = async (n: number, body: Buffer, chunked: boolean) => {
      const res = await request(`${served.url}/random/${n}`, {
        method: 'POST',
        dispatcher: undiciAgent,
        headers: { 'idempotency-key': `rnd-${initialSeed}-${n}` },
        body: chunked
          ? Readable.from(
              (function* () {
                for (let at = 0; at < body.length; at += 32_768) yield body.subarray(at, at + 32_768);
              })(),
            )
          : body,
      });
      await res.body.text();
      return res.statusCode;
    };
    const viaNode = (n: number, body: Buffer, chunked: boolean) =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          `${served.url}/random/${n}`,
          {
            method: 'POST',
            agent: nodeAgent,
            headers: {
              'idempotency-key': `rnd-${initialSeed}-${n}`,
              ...(chunked ? {} : { 'content-length': body.length }),
            },
          },
          (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.end(body);
      });
    const worker = async (client: typeof viaUndici) => {
      while (next < total) {
        const n = next++;
        const over = random() < 0.1;
        const size = over ? LIMIT + 1 + Math.floor(random() * 4 * 1024 * 1024) : Math.floor(random() * 16 * 1024);
        count(over ? '413' : '201', expected);
        try {
          count(String(await client(n, Buffer.alloc(size, 97), random() < 0.3)));
        } catch (error) {
          const e = error as { code?: string; cause?: { code?: string } };
          count(e.code ?? e.cause?.code ?? 'error');
        }
      }
    };
    try {
      await Promise.all([worker(viaUndici), worker(viaUndici), worker(viaNode), worker(viaNode)]);
    } finally {
      await undiciAgent.close();
      nodeAgent.destroy();
      served.child.kill('SIGTERM');
      await served.exited;
    }
    // Every request got its answer, 201 within the limit and 413 over it: no ECONNRESET, no EPIPE.
    expect({ seed: initialSeed, outcomes }).toEqual({ seed: initialSeed, outcomes: expected });
  }, 120_000);

  it('undici: a chunked unkeyed upload of 5 MiB streams to the upstream whole', async () => {
    const chunk = Buffer.alloc(64 * 1024, 3);
    const res = await request(`${gateway.url}/chunked`, {
      method: 'POST',
      body: Readable.from(
        (function* () {
          for (let i = 0; i < 80; i++) yield chunk;
        })(),
      ),
    });
    expect(res.statusCode).toBe(201);
    expect(await res.body.json()).toEqual({ size: 80 * 64 * 1024 });
    expect(hits('/chunked')[0]?.headers['transfer-encoding']).toBe('chunked');
  });

  it('raw socket: an absolute-form target reaches the upstream in origin-form, with its host as X-Forwarded-Host', async () => {
    const client = raw();
    client.socket.write(
      'POST http://api.example.com/absolute?x=1 HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi',
    );
    await client.ended;
    expect(client.text()).toMatch(/^HTTP\/1\.1 201/);
    const hit = hits('/absolute?x=1')[0];
    expect(hit?.body).toBe('hi');
    expect(hit?.headers['x-forwarded-host']).toBe('api.example.com');
  });

  it('raw socket: OPTIONS * is answered by the gateway; HEAD, 204 and 304 pass through without a body', async () => {
    const client = raw();
    client.socket.write(
      'OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nHEAD /head HTTP/1.1\r\nHost: x\r\n\r\nGET /no-content HTTP/1.1\r\nHost: x\r\n\r\nGET /not-modified HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    );
    await client.ended;
    const answers = client.text().split(/(?=HTTP\/1\.1 )/);
    expect(answers.map((a) => a.slice(9, 12))).toEqual(['204', '200', '204', '304']);
    expect(answers[1]).toMatch(/content-length: 10\r\n[\s\S]*\r\n\r\n$/i);
    expect(answers[2]).toMatch(/\r\n\r\n$/);
    expect(answers[3]).toMatch(/etag: "v1"[\s\S]*\r\n\r\n$/i);
    expect(hits('/head')[0]?.method).toBe('HEAD');
  });

  it('drops upstream trailers, and headers the client named in Connection; adds Via and Forwarded', async () => {
    const client = raw();
    client.socket.write(
      'GET /trailers HTTP/1.1\r\nHost: gw.example\r\nConnection: close, x-hop-secret\r\nX-Hop-Secret: s\r\nVia: 1.1 edge\r\nForwarded: for=192.0.2.1\r\n\r\n',
    );
    await client.ended;
    expect(client.text()).toMatch(/^HTTP\/1\.1 200[\s\S]*\r\n\r\n4\r\nbody\r\n0\r\n\r\n$/);
    expect(client.text()).not.toMatch(/x-checksum/i);
    const hit = hits('/trailers')[0];
    expect(hit?.headers['x-hop-secret']).toBeUndefined();
    expect(hit?.headers.via).toBe('1.1 edge, 1.1 idempo');
    expect(hit?.headers.forwarded).toBe('for=192.0.2.1, for=127.0.0.1;host=gw.example;proto=http');
  });
});

describe('slow clients and own failures', () => {
  it('answers 408 and closes a connection whose headers do not arrive within --headers-timeout, and logs it', async () => {
    const client = raw(slow.port);
    client.socket.write('POST /slow-headers HTTP/1.1\r\nHost: x\r\n');
    const { error } = await client.ended;
    expect(error).toBeUndefined();
    expect(client.text()).toMatch(/^HTTP\/1\.1 408[\s\S]*connection: close/i);
    expect(logs.some((l) => l.status === 408 && String(l.msg).startsWith('idempo gateway answered 408'))).toBe(true);
    expect(hits('/slow-headers')).toHaveLength(0);
  });

  it('answers 408 to a body that stalls past --request-timeout', async () => {
    const client = raw(slow.port);
    client.socket.write(
      'POST /slow-body HTTP/1.1\r\nHost: x\r\nIdempotency-Key: slow-body\r\nContent-Length: 100\r\n\r\npart',
    );
    // Keep the headers timeout from firing first: the request's headers are complete.
    await client.ended;
    expect(client.text()).toMatch(/^HTTP\/1\.1 408/);
    expect(hits('/slow-body')).toHaveLength(0);
  });

  it('closes a kept-alive connection idle past --keep-alive-timeout', async () => {
    const client = raw(slow.port);
    client.socket.write('GET /idle HTTP/1.1\r\nHost: x\r\n\r\n');
    await client.until((text) => text.includes('{"size":0}'));
    const { error } = await client.ended;
    expect(error).toBeUndefined();
    expect(client.text()).toMatch(/^HTTP\/1\.1 200/);
  });

  it('logs the failures it answers itself, keyed or not, with their real cause', async () => {
    const unreachable = await startGateway({
      upstream: 'http://127.0.0.1:1',
      port: 0,
      store: 'memory:',
      logger: pino(
        { level: 'info' },
        new Writable({
          write(chunk, _e, done) {
            for (const line of String(chunk).split('\n')) if (line) logs.push(JSON.parse(line));
            done();
          },
        }),
      ),
    });
    try {
      const unkeyed = await fetch(`${unreachable.url}/down`, { method: 'POST', body: 'x' });
      expect(unkeyed.status).toBe(502);
      const keyed = await fetch(`${unreachable.url}/down-keyed`, {
        method: 'POST',
        body: 'x',
        headers: { 'idempotency-key': 'down-1' },
      });
      expect(keyed.status).toBe(502);
    } finally {
      await unreachable.close();
    }
    const answered = logs.filter((l) => l.code === 'IDEMPO_UPSTREAM_UNREACHABLE');
    expect(answered.map((l) => l.url).sort()).toEqual(['/down', '/down-keyed']);
    expect(answered[0]?.msg).toMatch(
      /^idempo gateway answered 502 IDEMPO_UPSTREAM_UNREACHABLE: The upstream .* could not be reached \(ECONNREFUSED\); nothing was sent/,
    );
    expect(logs.some((l) => l.code === 'IDEMPO_BODY_TOO_LARGE' && l.key === 'curl-big')).toBe(true);
  });
});
