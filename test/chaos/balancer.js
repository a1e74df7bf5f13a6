// A lossy load balancer on loopback, after examples/client/lossy-proxy.js (whose seeded PRNG it
// reuses), but in front of several instances: it spreads requests round-robin, tells the next
// instance when one refuses connections (a killed instance, as a health-checked balancer would;
// nothing was sent, so that is safe for a POST), tags each forwarded request with the instance and
// its generation (`x-chaos-instance: <index>:<generation>`, which the gateway passes on to the
// ledger), and, for a seeded share of requests, lets the instance do the work and then cuts the
// client's connection before a byte of the answer reaches it. A client that hangs up is passed on:
// the connection to the instance is cut too, as a real proxy does.
import http from 'node:http';
import { forwardHeaders, seededRandom } from '../../examples/client/lossy-proxy.js';

/**
 * @param {{ instances: { port: number, generation: number, up: boolean }[], dropRate: number, seed: number }} options
 *   `instances` is read on every request, so the harness can mark restarts (generation) in place.
 */
export async function startBalancer({ instances, dropRate, seed }) {
  const random = seededRandom(seed);
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  const counts = { requests: 0, droppedResponses: 0, clientHangUps: 0, noInstance: 0, refusedRetried: 0 };
  let next = 0;

  const server = http.createServer((req, res) => {
    counts.requests += 1;
    const drop = random() < dropRate;
    const body = [];
    req.on('data', (chunk) => body.push(chunk));
    req.on('end', () => forward(Buffer.concat(body), 0));
    let upstream;
    res.once('close', () => {
      if (!res.writableFinished) {
        if (!drop) counts.clientHangUps += 1;
        upstream?.destroy();
      }
    });

    function forward(payload, tried) {
      if (res.destroyed) return;
      if (tried >= instances.length) {
        counts.noInstance += 1;
        res.writeHead(502, { 'content-type': 'text/plain' }).end('chaos balancer: no instance answered');
        return;
      }
      const index = next++ % instances.length;
      const instance = instances[index];
      const headers = { ...forwardHeaders(req.headers), 'x-chaos-instance': `${index}:${instance.generation}` };
      headers['content-length'] = String(payload.length);
      let sent = false;
      upstream = http.request(
        { host: '127.0.0.1', port: instance.port, path: req.url, method: req.method, headers, agent },
        (instanceRes) => {
          if (drop) {
            // The instance has answered, so its work is done: read its answer, then hang up on the client.
            instanceRes.resume();
            instanceRes.on('end', () => {
              counts.droppedResponses += 1;
              res.destroy();
            });
            instanceRes.on('error', () => res.destroy());
            return;
          }
          res.writeHead(instanceRes.statusCode ?? 502, forwardHeaders(instanceRes.headers));
          instanceRes.pipe(res);
          instanceRes.on('error', () => res.destroy());
        },
      );
      upstream.on('socket', (socket) => {
        const markSent = () => {
          sent = true;
        };
        if (socket.connecting) socket.once('connect', markSent);
        else markSent();
      });
      upstream.on('error', (error) => {
        if (!sent && error.code === 'ECONNREFUSED') {
          counts.refusedRetried += 1;
          forward(payload, tried + 1);
          return;
        }
        // The instance may have had the request: the client must not be told it did not.
        res.destroy();
      });
      upstream.end(payload);
    }
  });
  server.keepAliveTimeout = 30_000;
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    stats: () => ({ ...counts }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
