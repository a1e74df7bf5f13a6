import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { type AddressInfo, Socket } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import type { CapturedResponse, Execution } from '../engine/types.js';
import { unprotectedContext } from '../engine/unprotected.js';
import { asBuffer, capture, respondEarly } from './node-response.js';

/** An execution that records what it was asked to store. */
function recordingExecution(seen: CapturedResponse[]): Execution {
  const commitNow = (response: CapturedResponse) => {
    seen.push(response);
    return undefined;
  };
  return {
    action: 'execute',
    body: null,
    context: { ...unprotectedContext(), key: 'k', storeKey: 's', token: 1 },
    commit: async (response) => commitNow(response),
    commitNow,
    abort: async () => {},
    clientGone: () => {},
    track: () => {},
  };
}

/** A response whose prototype was swapped, as Express does with `app.response`. */
function swappedResponse(proto: object): ServerResponse {
  const res = new ServerResponse(new IncomingMessage(new Socket()));
  Object.setPrototypeOf(res, proto);
  return res;
}

describe('capture() on a response whose prototype was swapped', () => {
  it('captures through the prototype, adds nothing to the response, and leaves other responses alone', () => {
    const proto = Object.create(ServerResponse.prototype) as object;
    const seen: CapturedResponse[] = [];
    const captured = swappedResponse(proto);
    capture(captured, recordingExecution(seen), 1024);
    captured.writeHead(201, { 'content-type': 'text/plain' }).end('made');
    expect(Object.getOwnPropertyNames(captured).filter((name) => ['writeHead', 'write', 'end'].includes(name))).toEqual(
      [],
    );
    expect(seen.map((r) => [r.status, Buffer.from(r.body ?? []).toString()])).toEqual([[201, 'made']]);
    expect(captured.writableEnded).toBe(true);

    const plain = swappedResponse(proto);
    plain.end('not captured');
    expect(seen).toHaveLength(1);
    expect(plain.writableEnded).toBe(true);
  });

  it('lets a second capture of the same response wrap the first, so both see what was written', () => {
    const proto = Object.create(ServerResponse.prototype) as object;
    const outer: CapturedResponse[] = [];
    const inner: CapturedResponse[] = [];
    const res = swappedResponse(proto);
    capture(res, recordingExecution(outer), 1024);
    capture(res, recordingExecution(inner), 1024);
    res.writeHead(200).end('both');
    expect(inner.map((r) => Buffer.from(r.body ?? []).toString())).toEqual(['both']);
    expect(outer.map((r) => Buffer.from(r.body ?? []).toString())).toEqual(['both']);
  });
});

describe('respondEarly()', () => {
  async function serve(listener: (res: ServerResponse, seen: CapturedResponse[]) => void) {
    const seen: CapturedResponse[] = [];
    const server = createServer((_req, res) => {
      capture(res, recordingExecution(seen), 1024);
      listener(res, seen);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return { url, seen, close: () => new Promise((resolve) => server.close(resolve)) };
  }
  const early = {
    status: 504,
    headers: [['content-type', 'text/plain']] as [string, string][],
    body: Buffer.from('late'),
  };

  it('answers the client now, and still captures what the handler writes afterwards', async () => {
    const { url, seen, close } = await serve((res) => {
      respondEarly(res, early);
      setTimeout(() => res.writeHead(201, { 'content-type': 'text/plain' }).end('made'), 30);
    });
    const answer = await fetch(url, { method: 'POST' });
    expect([answer.status, await answer.text()]).toEqual([504, 'late']);
    await vi.waitFor(() => expect(seen).toHaveLength(1));
    expect(seen.map((r) => [r.status, Buffer.from(r.body ?? []).toString()])).toEqual([[201, 'made']]);
    await close();
  });

  it('cuts a response whose head already went out, so the client retries instead of waiting', async () => {
    const { url, close } = await serve((res) => {
      res.writeHead(201, { 'content-type': 'text/plain', 'content-length': '4' });
      res.write('ma');
      setTimeout(() => respondEarly(res, early), 20);
    });
    const answer = await fetch(url, { method: 'POST' });
    expect(answer.status).toBe(201);
    await expect(answer.text()).rejects.toThrow();
    await close();
  });
});

describe('asBuffer', () => {
  it('returns a Buffer as it is and a plain view as a Buffer over the same bytes', () => {
    const buffer = Buffer.from('abc');
    expect(asBuffer(buffer)).toBe(buffer);
    const backing = new TextEncoder().encode('{"id":1}');
    const view = asBuffer(backing.subarray(1, 5));
    expect(Buffer.isBuffer(view)).toBe(true);
    expect(view.toString()).toBe('"id"');
    backing[2] = 0x4a; // 'J'
    expect(view.toString()).toBe('"Jd"');
  });
});
