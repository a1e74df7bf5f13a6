import { IncomingMessage, ServerResponse } from 'node:http';
import { Socket } from 'node:net';
import { describe, expect, it } from 'vitest';
import type { CapturedResponse, Execution } from '../engine/types.js';
import { capture } from './node-response.js';

/** An execution that records what it was asked to store. */
function recordingExecution(seen: CapturedResponse[]): Execution {
  const commitNow = (response: CapturedResponse) => {
    seen.push(response);
    return undefined;
  };
  return {
    action: 'execute',
    body: null,
    context: {
      key: 'k',
      storeKey: 's',
      token: 1,
      recovered: false,
      signal: new AbortController().signal,
      step: async (_n, fn) => fn(),
    },
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
