/**
 * Loopback ports for the servers tests start: one picker for the TypeScript test helpers and for
 * the chaos harness, which node runs as plain JavaScript (hence a .js file, typed by ports.d.ts).
 */
import { createServer } from 'node:net';

const HOST = '127.0.0.1';

function canListen(port) {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

const handedOut = new Set();

/**
 * A free loopback port, never handed out twice by this process (a restart reuses its own); with
 * `bus`, port + 10000 is free too (a Redis Cluster node's bus port). Picked below Linux's
 * ephemeral range (32768–60999), bus port included: between this look and the server's bind, or
 * while a server is stopped to be started again on its port, an outgoing connection of a parallel
 * test cannot take it, as one can take a port that `listen(0)` handed out.
 */
export async function freePort({ bus = false } = {}) {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = 10_000 + Math.floor(Math.random() * 12_000);
    if (handedOut.has(port)) continue;
    if ((await canListen(port)) && (!bus || (await canListen(port + 10_000)))) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error('no free port found below the ephemeral range');
}
