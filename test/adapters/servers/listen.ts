import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RunningServer } from './app.js';

/** Listens on an ephemeral loopback port; `close()` also drops idle keep-alive connections. */
export function listen(server: Server): Promise<RunningServer> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}
