/**
 * A real loopback node:http server for the client's tests: it records every request it receives
 * (method, URL, headers, body bytes) and answers with scripted replies, so tests exercise the
 * client over real sockets instead of a mocked fetch.
 */
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request as the server saw it. */
export interface SeenRequest {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** How the server answers request number `index` (0-based). */
export type Reply = (res: ServerResponse, seen: SeenRequest, index: number) => void;

export interface TestServer {
  readonly url: string;
  /** Every request received so far, in arrival order. */
  readonly requests: SeenRequest[];
  close(): Promise<void>;
}

/** Answers `code` with a small JSON body and the given headers. */
export function status(code: number, headers: Record<string, string> = {}): Reply {
  return (res, _seen, index) => {
    res.writeHead(code, { 'content-type': 'application/json', ...headers });
    res.end(JSON.stringify({ status: code, attempt: index + 1 }));
  };
}

/** Cuts the connection without answering: the client sees a network error. */
export const drop: Reply = (res) => {
  res.socket?.destroy();
};

/** Never answers (until the server closes). */
export const hang: Reply = () => {};

/** Reply `i` answers request `i`; the last reply answers every later request. */
export function sequence(...replies: Reply[]): Reply {
  return (res, seen, index) => {
    const reply = replies[Math.min(index, replies.length - 1)];
    if (reply === undefined) throw new Error('sequence() needs at least one reply');
    reply(res, seen, index);
  };
}

export async function startTestServer(reply: Reply = status(200)): Promise<TestServer> {
  const requests: SeenRequest[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const seen: SeenRequest = {
        method: req.method ?? '',
        url: req.url ?? '',
        headers: req.headers,
        body: Buffer.concat(chunks),
      };
      const index = requests.push(seen) - 1;
      reply(res, seen, index);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
