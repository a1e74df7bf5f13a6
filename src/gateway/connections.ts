import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';

/** The request a connection is reading now, so a close can tell whether its body is still coming. */
const READING = Symbol('idempo.reading');
type WatchedSocket = Socket & { [READING]?: IncomingMessage };

/** Options of {@link lingerBeforeClose}. */
export interface LingerOptions {
  /**
   * How long a connection may go without a byte from the client while its refused body is read
   * and dropped, in ms.
   * @default 5000
   */
  idleMs?: number;
  /**
   * How long in all a refused body is read and dropped before the connection is closed anyway, in ms.
   * @default 30000
   */
  maxMs?: number;
}

/**
 * A "lingering close", as nginx does it. When the gateway answers before it has read the whole
 * request (a `413`, a refusal while draining, any answer with `Connection: close`), node:http
 * would end the connection and destroy it at once; the client is usually still sending its body,
 * and the kernel answers those bytes with a reset, which can reach the client before it has read
 * the answer: it sees `ECONNRESET` instead of the `413`, and does not retry a POST.
 *
 * Here the gateway sends its answer and its FIN, then keeps reading (and dropping) what the
 * client still sends until the request's body is complete, the client closes its side, it stays
 * silent for `idleMs`, or `maxMs` pass; only then is the connection closed.
 *
 * Call {@link readingRequest} for each request so the server knows which body is still coming.
 *
 * @example
 * ```ts
 * const server = http.createServer((req, res) => { readingRequest(req); … });
 * lingerBeforeClose(server);
 * ```
 */
export function lingerBeforeClose(server: Server, { idleMs = 5_000, maxMs = 30_000 }: LingerOptions = {}): void {
  server.on('connection', (socket: WatchedSocket) => {
    const destroySoon = socket.destroySoon;
    socket.destroySoon = function lingeringDestroySoon(this: WatchedSocket): void {
      const req = this[READING];
      if (req === undefined || req.complete || req.destroyed) {
        destroySoon.call(this);
        return;
      }
      linger(this, req, idleMs, maxMs);
    };
  });
}

/** Notes that `req`'s connection is reading it, until its body is complete. */
export function readingRequest(req: IncomingMessage): void {
  const socket = req.socket as WatchedSocket;
  socket[READING] = req;
}

function linger(socket: Socket, req: IncomingMessage, idleMs: number, maxMs: number): void {
  // The answer and then a FIN: the client learns the connection is done, and what it still sends
  // is parsed into the request (which node:http dumps) and dropped, never met with a reset.
  socket.end();
  let done = false;
  const close = () => {
    if (done) return;
    done = true;
    clearTimeout(total);
    clearTimeout(idle);
    socket.off('data', onData);
    socket.destroy();
  };
  const total = setTimeout(close, maxMs);
  const idle = setTimeout(close, idleMs);
  const onData = () => {
    idle.refresh();
  };
  socket.on('data', onData);
  // The client's body is all in (the parser saw its end), or it closed its side: nothing more comes.
  req.once('end', close);
  socket.once('end', close);
  socket.once('close', close);
  // A request whose stream nobody reads any more must still flow to its end.
  req.resume();
}
