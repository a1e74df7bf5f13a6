import { createServer, IncomingMessage, type Server } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { bodyAlreadyRead, readRestoring } from './node-body.js';

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve));
  server = undefined;
});

type Seen = { read: string | null; kept: string | null; streamed: string; added: string[] };

/**
 * A server that gives each request the prototype `protoOf()` returns (as Express gives every
 * `req` its app's `app.request`), reads the body with `readRestoring`, then streams it again, and
 * answers what it saw and which own properties reading added to the request.
 */
async function serve(protoOf: () => object): Promise<string> {
  server = createServer(async (req, res) => {
    Object.setPrototypeOf(req, protoOf());
    const before = Reflect.ownKeys(req);
    const body = await readRestoring(req, 1_000_000);
    const added = Reflect.ownKeys(req)
      .filter((name) => !before.includes(name))
      .map(String);
    const kept = bodyAlreadyRead(req);
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const seen: Seen = {
      read: body?.toString() ?? null,
      kept: kept?.toString() ?? null,
      streamed: Buffer.concat(chunks).toString(),
      added,
    };
    res.end(JSON.stringify(seen));
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function send(url: string, body: string): Promise<Seen> {
  const response = await fetch(url, { method: 'POST', body });
  return (await response.json()) as Seen;
}

/** A body with a known length, written in two packets so the request stream gets two pushes. */
function sendInTwo(url: string, first: string, second: string): Promise<Seen> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    let response = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      response += chunk;
    });
    socket.on('end', () => resolve(JSON.parse(response.split('\r\n\r\n', 2)[1] ?? '') as Seen));
    socket.on('error', reject);
    socket.on('connect', () => {
      const length = Buffer.byteLength(first + second);
      socket.write(`POST / HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: ${length}\r\n\r\n${first}`);
      setTimeout(() => socket.write(second), 20);
    });
  });
}

describe('readRestoring on a request whose prototype was swapped', () => {
  it('adds nothing to the request, and keeps the body for bodyAlreadyRead', async () => {
    const proto = Object.create(IncomingMessage.prototype) as object;
    const url = await serve(() => proto);
    const expected = { read: '{"a":1}', kept: '{"a":1}', streamed: '{"a":1}', added: [] };
    expect(await send(url, '{"a":1}')).toEqual(expected);
    expect(await send(url, '{"a":1}')).toEqual(expected);
    expect(Object.hasOwn(proto, 'push')).toBe(true);
    const many = await sendInTwo(url, '{"a":', '1}');
    expect(many).toEqual(expected);
  });

  it('sees each push once when a parent and a child prototype both carry the watching push', async () => {
    // A sub-app's app.request inherits its parent app's; either may be first to carry the push.
    for (const childFirst of [false, true]) {
      const parent = Object.create(IncomingMessage.prototype) as object;
      const child = Object.create(parent) as object;
      const order = childFirst ? [child, parent, child] : [parent, child, parent];
      let next = 0;
      const url = await serve(() => order[next++ % order.length] as object);
      for (let i = 0; i < order.length; i++) {
        expect(await sendInTwo(url, '{"a":', '1}')).toEqual({
          read: '{"a":1}',
          kept: '{"a":1}',
          streamed: '{"a":1}',
          added: [],
        });
      }
      expect([Object.hasOwn(parent, 'push'), Object.hasOwn(child, 'push')]).toEqual([true, true]);
      server?.closeAllConnections();
      await new Promise((resolve) => server?.close(resolve));
    }
  });

  it('wraps the request itself when its prototype already overrides push', async () => {
    let pushes = 0;
    const proto = Object.create(IncomingMessage.prototype, {
      push: {
        value(this: IncomingMessage, chunk: unknown, encoding?: BufferEncoding) {
          pushes++;
          return IncomingMessage.prototype.push.call(this, chunk, encoding);
        },
        writable: true,
        configurable: true,
      },
    }) as object;
    const url = await serve(() => proto);
    const seen = await send(url, '{"a":1}');
    expect([seen.read, seen.kept, seen.streamed]).toEqual(['{"a":1}', '{"a":1}', '{"a":1}']);
    expect(seen.added).toContain('push');
    expect(pushes).toBe(2);
  });
});
