import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createIdempotency } from '../engine/engine.js';
import type { IdempotencyOptions } from '../engine/types.js';
import { createMemoryStore } from '../stores/memory.js';
import { createSqliteStore } from '../stores/sqlite.js';
import { idempotencyContext, idempotent, type NodeListener } from './node.js';

const servers: Server[] = [];
const dir = mkdtempSync(join(tmpdir(), 'idempo-node-'));
afterAll(async () => {
  for (const server of servers) {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  }
  rmSync(dir, { recursive: true, force: true });
});

async function serve(listener: NodeListener, options: Partial<IdempotencyOptions> = {}) {
  const idem = createIdempotency({ store: createMemoryStore(), ...options });
  const server = createServer(idempotent(idem, listener));
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

const post = (url: string, key: string | undefined, body = '{"a":1}', signal?: AbortSignal) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(key ? { 'idempotency-key': key } : {}) },
    body,
    ...(signal ? { signal } : {}),
  });

/**
 * One request over a raw socket, its body written in `pieces` with a pause between them (so the
 * server gets several packets), or cut off after `stopAfter` bytes and the socket closed, or
 * sent whole and the socket closed `hangUpAfterMs` later. Resolves to the raw response text ('' when
 * cut off).
 */
function rawRequest(
  url: string,
  key: string,
  body: string,
  how: { pieces?: number; stopAfter?: number; hangUpAfterMs?: number },
) {
  const { port } = new URL(url);
  return new Promise<string>((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let response = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      response += chunk;
      const [head, rest] = response.split('\r\n\r\n', 2);
      const length = Number(/content-length: (\d+)/i.exec(head ?? '')?.[1]);
      if (rest !== undefined && Buffer.byteLength(rest) >= length) {
        socket.end();
        resolve(response);
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(response));
    socket.on('connect', async () => {
      socket.write(
        `POST /pay HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nidempotency-key: ${key}\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n`,
      );
      if (how.stopAfter !== undefined) {
        socket.write(body.slice(0, how.stopAfter));
        await new Promise((r) => setTimeout(r, 20));
        socket.destroy();
        return;
      }
      const pieces = how.pieces ?? 1;
      const size = Math.ceil(body.length / pieces);
      for (let at = 0; at < body.length; at += size) {
        await new Promise((r) => setTimeout(r, 10));
        socket.write(body.slice(at, at + size));
      }
      if (how.hangUpAfterMs !== undefined) {
        await new Promise((r) => setTimeout(r, how.hangUpAfterMs));
        socket.destroy();
      }
    });
  });
}

async function readBody(req: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of req) text += chunk;
  return text;
}

describe('idempo/node', () => {
  it('hands the listener the request body it read to fingerprint, as a normal stream', async () => {
    const url = await serve(async (req, res) => {
      const body = await readBody(req);
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ got: body }));
    });
    expect(await (await post(url, 'body-1', '{"x":42}')).json()).toEqual({ got: '{"x":42}' });
    expect(await (await post(url, undefined, '{"y":1}')).json()).toEqual({ got: '{"y":1}' });
  });

  it('fingerprints a body that arrives in several packets, and hands the listener all of it', async () => {
    let runs = 0;
    const url = await serve(async (req, res) => {
      runs++;
      const text = await readBody(req);
      res.writeHead(201, { 'content-length': Buffer.byteLength(text) }).end(text);
    });
    const body = JSON.stringify({ amount: 1999, note: 'x'.repeat(200) });
    const send = () => rawRequest(url, 'split-1', body, { pieces: 3 });
    const first = await send();
    expect(first.startsWith('HTTP/1.1 201')).toBe(true);
    expect(first.endsWith(`\r\n\r\n${body}`)).toBe(true);
    const replay = await send();
    expect(replay).toMatch(/idempotent-replayed: true/i);
    expect(replay.endsWith(body)).toBe(true);
    // Same key, same body in other pieces and key order: still the same request.
    const reordered = JSON.stringify({ note: 'x'.repeat(200), amount: 1999 });
    expect(await rawRequest(url, 'split-1', reordered, { pieces: 5 })).toMatch(/idempotent-replayed: true/i);
    expect(runs).toBe(1);
  });

  it('hands the listener a body longer than the stream buffers (read and put back)', async () => {
    const url = await serve(async (req, res) => {
      res.writeHead(201).end(String((await readBody(req)).length));
    });
    const body = JSON.stringify({ blob: 'y'.repeat(100_000) });
    expect(await (await post(url, 'long-1', body)).text()).toBe(String(body.length));
    const replay = await post(url, 'long-1', body);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(await replay.text()).toBe(String(body.length));
  });

  it('claims nothing for a client that disconnects before its body arrived', async () => {
    let runs = 0;
    const url = await serve(async (req, res) => {
      runs++;
      res.writeHead(201).end(await readBody(req));
    });
    await rawRequest(url, 'gone-1', '{"a":1}', { stopAfter: 3 });
    await new Promise((r) => setTimeout(r, 50));
    // The key was never claimed, so the retry runs at once rather than meeting 409 in flight.
    const retry = await post(url, 'gone-1', '{"a":1}');
    expect(retry.status).toBe(201);
    expect(await retry.text()).toBe('{"a":1}');
    expect(runs).toBe(1);
  });

  it('hands the body back to the listener when the store fails and idempo fails open', async () => {
    const fail = async () => {
      throw new Error('store down');
    };
    const url = await serve(
      async (req, res) => {
        res.writeHead(200).end(await readBody(req));
      },
      { store: { claim: fail, complete: fail, release: fail, renew: fail, saveStep: fail }, onStoreError: 'fail-open' },
    );
    const res = await post(url, 'open-1', '{"still":"here"}');
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"still":"here"}');
  });

  it('captures streamed writes, setHeader and writeHead headers, and replays them exactly', async () => {
    let runs = 0;
    const url = await serve((_req, res) => {
      runs++;
      res.setHeader('x-set', 'one');
      res.setHeader('x-multi', ['a', 'b']);
      res.writeHead(202, { 'x-head': 'two', 'content-type': 'text/plain; charset=utf-8' });
      res.write('héllo ');
      res.write(Buffer.from('wörld'));
      setTimeout(() => res.end(' !', 'utf8'), 10);
    });
    const first = await post(url, 'stream-1');
    const text = await first.text();
    expect(text).toBe('héllo wörld !');
    const replay = await post(url, 'stream-1');
    expect(replay.status).toBe(202);
    expect(await replay.text()).toBe(text);
    expect(replay.headers.get('x-set')).toBe('one');
    expect(replay.headers.get('x-multi')).toBe('a, b');
    expect(replay.headers.get('x-head')).toBe('two');
    expect(replay.headers.get('content-type')).toBe('text/plain; charset=utf-8');
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(runs).toBe(1);
  });

  it('captures writeHead with a raw header array and end() with no arguments', async () => {
    const url = await serve((_req, res) => {
      res.writeHead(200, ['x-raw', '1', 'x-raw', '2']);
      res.write('only');
      res.end();
    });
    await post(url, 'raw-1');
    const replay = await post(url, 'raw-1');
    expect(await replay.text()).toBe('only');
    expect(replay.headers.get('x-raw')).toBe('1, 2');
  });

  it('releases the key and answers 500 when the listener throws synchronously or rejects', async () => {
    let calls = 0;
    const url = await serve(async (_req, res) => {
      calls++;
      if (calls === 1) throw new Error('sync-ish failure');
      if (calls === 2) await Promise.reject(new Error('async failure'));
      res.writeHead(201).end('third time');
    });
    const first = await post(url, 'throw-1');
    expect(first.status).toBe(500);
    expect((await first.json()).code).toBe('IDEMPO_HANDLER_FAILED');
    expect((await post(url, 'throw-1')).status).toBe(500);
    const third = await post(url, 'throw-1');
    expect(third.status).toBe(201);
    expect(calls).toBe(3);
  });

  it('keeps the key of a response cut before it ended until its lease passes, then lets a retry recover it', async () => {
    let calls = 0;
    const url = await serve(
      (_req, res) => {
        calls++;
        if (calls === 1) {
          res.writeHead(200);
          res.write('partial');
          setTimeout(() => res.destroy(), 10);
          return;
        }
        res.writeHead(201).end('whole');
      },
      { lease: 300 },
    );
    await expect(post(url, 'close-1').then((r) => r.text())).rejects.toThrow();
    // Whether the first run did its work is unknown: the key is not released for a retry to run it again.
    expect((await post(url, 'close-1')).status).toBe(409);
    expect(calls).toBe(1);
    // Nothing renews a lease for a listener that has returned: one lease later a retry takes over.
    await new Promise((r) => setTimeout(r, 400));
    const retry = await post(url, 'close-1');
    expect(await retry.text()).toBe('whole');
    expect(calls).toBe(2);
  });

  it('finishes the work of a client that hung up and replays its result to the retry', async () => {
    let calls = 0;
    const url = await serve(async (_req, res) => {
      calls++;
      await new Promise((r) => setTimeout(r, 150));
      res.writeHead(201, { 'content-type': 'text/plain' }).end(`charge ${calls}`);
    });
    // A client that gives up 30 ms in, while the listener still works.
    await expect(post(url, 'gone-1', '{"a":1}', AbortSignal.timeout(30))).rejects.toThrow();
    const during = await post(url, 'gone-1');
    expect(during.status).toBe(409);
    await new Promise((r) => setTimeout(r, 200));
    const retry = await post(url, 'gone-1');
    expect(retry.status).toBe(201);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(await retry.text()).toBe('charge 1');
    expect(calls).toBe(1);
  });

  it('keeps renewing the lease of a hung-up client while its listener still works', async () => {
    let calls = 0;
    const url = await serve(
      async (_req, res) => {
        calls++;
        // Three leases long: without renewal a retry would take the key over and run it again.
        await new Promise((r) => setTimeout(r, 600));
        res.writeHead(201).end('slow');
      },
      { lease: 200 },
    );
    await expect(post(url, 'gone-2', '{"a":1}', AbortSignal.timeout(30))).rejects.toThrow();
    await new Promise((r) => setTimeout(r, 400));
    expect((await post(url, 'gone-2')).status).toBe(409);
    await new Promise((r) => setTimeout(r, 300));
    const retry = await post(url, 'gone-2');
    expect(await retry.text()).toBe('slow');
    expect(calls).toBe(1);
  });

  it('releases at once a key whose client hung up before the listener started, and runs nothing', async () => {
    let calls = 0;
    let claims = 0;
    const memory = createMemoryStore();
    const slowClaim: typeof memory.claim = async (input) => {
      claims++;
      // The claim is still on its way when the client goes.
      await new Promise((r) => setTimeout(r, 100));
      return memory.claim(input);
    };
    const url = await serve(
      (_req, res) => {
        calls++;
        res.writeHead(201).end('ran');
      },
      { store: { ...memory, claim: slowClaim }, lease: 60_000 },
    );
    const cut = await rawRequest(url, 'early-1', '{"a":1}', { hangUpAfterMs: 20 });
    expect(cut).toBe('');
    await new Promise((r) => setTimeout(r, 150));
    expect(calls).toBe(0);
    // Released, not pinned for the 60 s lease: the retry runs at once.
    const retry = await post(`${url}/pay`, 'early-1');
    expect([retry.status, await retry.text()]).toEqual([201, 'ran']);
    expect([claims, calls]).toEqual([2, 1]);
  });

  it('holds back the last byte of a Content-Length body until it is stored: an unstored result never reads as whole', async () => {
    const memory = createMemoryStore();
    let stored = true;
    const url = await serve(
      (_req, res) => {
        const body = '{"id":"pay_1","status":"succeeded"}';
        res.writeHead(201, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        // The whole body goes out in writes before end(), as a proxy streams it.
        res.write(body.slice(0, 10));
        res.write(body.slice(10));
        setTimeout(() => res.end(), 20);
      },
      {
        store: {
          ...memory,
          complete: async (...args) => {
            if (!stored) throw new Error('store down');
            return memory.complete(...args);
          },
        },
        completeTimeout: 100,
      },
    );
    const ok = await post(url, 'tail-1');
    expect([ok.status, await ok.text()]).toEqual([201, '{"id":"pay_1","status":"succeeded"}']);
    stored = false;
    const unstored = await post(url, 'tail-2');
    expect(unstored.status).toBe(201);
    // The head went out, the last byte did not: the client sees a broken body, never a whole success.
    await expect(unstored.text()).rejects.toThrow();
  });

  it('ends the response in the same turn on a synchronous store, and once stored on another', async () => {
    const endedAtOnce: boolean[] = [];
    const listener: NodeListener = (_req, res) => {
      res.writeHead(201, { 'content-type': 'text/plain' }).end('made');
      // Frameworks read this right after end() to decide whether to wait for 'finish' (Fastify does).
      endedAtOnce.push(res.writableEnded);
    };
    const memory = createMemoryStore();
    const syncUrl = await serve(listener, { store: memory });
    const asyncUrl = await serve(listener, { store: { ...memory } });
    for (const url of [syncUrl, asyncUrl]) {
      const first = await post(url, `turn-${url}`);
      expect([first.status, await first.text()]).toEqual([201, 'made']);
      expect((await post(url, `turn-${url}`)).headers.get('idempotent-replayed')).toBe('true');
    }
    expect(endedAtOnce).toEqual([true, false]);
  });

  it('exposes the execution context to the listener', async () => {
    const url = await serve((req, res) => {
      const ctx = idempotencyContext(req);
      res.end(JSON.stringify({ key: ctx?.key ?? null, token: ctx ? ctx.token > 0 : null }));
    });
    expect(await (await post(url, 'ctx-1')).json()).toEqual({ key: 'ctx-1', token: true });
    expect(await (await post(url, undefined)).json()).toEqual({ key: null, token: null });
  });

  it('answers 413 to a chunked body that grows past maxBodyBytes', async () => {
    const url = await serve(
      (_req, res) => {
        res.end('never');
      },
      { maxBodyBytes: 1_000 },
    );
    const body = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 4; i++) controller.enqueue(new Uint8Array(400));
        controller.close();
      },
    });
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'idempotency-key': 'big' },
      body,
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(413);
  });

  it.each(['memory', 'sqlite'])(
    'runs 200 concurrent HTTP requests with one new key exactly once (%s)',
    async (kind) => {
      let runs = 0;
      const store = kind === 'memory' ? createMemoryStore() : createSqliteStore({ path: join(dir, 'race.db') });
      const listener = (_req: IncomingMessage, res: ServerResponse) => {
        runs++;
        setTimeout(() => res.writeHead(201).end(`run ${runs}`), 30);
      };
      const url = await serve(listener, { store });
      const responses = await Promise.all(Array.from({ length: 200 }, () => post(url, `race-${kind}`)));
      expect(runs).toBe(1);
      // Requests that arrive after the first completed get its replay; the rest, while it ran, 409.
      const original = responses.filter((r) => r.status === 201 && r.headers.get('idempotent-replayed') === null);
      const replayed = responses.filter((r) => r.status === 201 && r.headers.get('idempotent-replayed') === 'true');
      const conflicts = responses.filter((r) => r.status === 409);
      expect(original).toHaveLength(1);
      expect(conflicts.length).toBeGreaterThan(0);
      expect(original.length + replayed.length + conflicts.length).toBe(200);
      expect(new Set(await Promise.all([...original, ...replayed].map((r) => r.text())))).toEqual(new Set(['run 1']));
    },
  );

  it.each(['memory', 'sqlite'])(
    "with concurrent: 'wait', 200 concurrent HTTP requests get one execution and the same 2xx body (%s)",
    async (kind) => {
      let runs = 0;
      const store = kind === 'memory' ? createMemoryStore() : createSqliteStore({ path: join(dir, 'wait.db') });
      const url = await serve(
        (_req, res) => {
          runs++;
          setTimeout(() => res.writeHead(201).end(`run ${runs}`), 50);
        },
        { store, concurrent: 'wait', waitTimeout: '10s' },
      );
      const responses = await Promise.all(Array.from({ length: 200 }, () => post(url, `wait-${kind}`)));
      const bodies = await Promise.all(responses.map((r) => r.text()));
      expect(runs).toBe(1);
      expect(new Set(responses.map((r) => r.status))).toEqual(new Set([201]));
      expect(new Set(bodies)).toEqual(new Set(['run 1']));
    },
  );
});
