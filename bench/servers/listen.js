/** Listens a node:http server on a free loopback port; `close()` ends its connections and runs `after`. */
export function listen(server, after = async () => {}) {
  return new Promise((resolve, reject) => {
    server.keepAliveTimeout = 60_000;
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      resolve({
        port: server.address().port,
        async close() {
          server.closeAllConnections?.();
          await new Promise((done) => server.close(() => done()));
          await after();
        },
      });
    });
  });
}
