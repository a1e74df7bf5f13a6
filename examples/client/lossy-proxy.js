// A lossy network on loopback: an HTTP proxy that forwards every request to a target and, for a
// set share of them, lets the target do the work and then cuts the client's connection before a
// byte of the response reaches it. The client sees a network error and cannot tell whether the
// request ran: exactly the case where a naive retry charges a card twice.
//
// Drops come from a seeded PRNG, drawn in the order requests arrive, so one seed gives one
// sequence of drops and a sequential run is reproducible to the request.
import http from 'node:http';

/** Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and are not forwarded. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

/**
 * A small seeded PRNG (xorshift32 over a scrambled seed): uniform enough for picking drops, and
 * the same numbers on every platform for the same seed.
 * @param {number} seed
 * @returns {() => number} numbers in [0, 1)
 */
export function seededRandom(seed) {
  let state = Math.imul((seed >>> 0) ^ 0x9e3779b9, 0x85ebca6b) >>> 0 || 0x6d2b79f5;
  return function next() {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 0x1_0000_0000;
  };
}

/** The request's headers less the hop-by-hop ones, as a proxy forwards them. */
export function forwardHeaders(headers) {
  const out = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

/**
 * Starts the lossy proxy. Types: `lossy-proxy.d.ts`.
 * @param {import('./lossy-proxy.js').LossyProxyOptions} options
 * @returns {Promise<import('./lossy-proxy.js').LossyProxy>}
 */
export async function startLossyProxy({
  target,
  dropRate = 0.25,
  dropRequestRate = 0,
  seed = 1,
  port = 0,
  host = '127.0.0.1',
}) {
  const targetUrl = new URL(target);
  const random = seededRandom(seed);
  const agent = new http.Agent({ keepAlive: true });
  const counts = { requests: 0, forwarded: 0, droppedRequests: 0, droppedResponses: 0 };

  const server = http.createServer((req, res) => {
    counts.requests += 1;
    // Both draws happen for every request, in arrival order, so the sequence never depends on
    // which branch an earlier request took.
    const dropRequest = random() < dropRequestRate;
    const dropResponse = random() < dropRate;
    if (dropRequest) {
      // The request never reaches the target: a connection failure, safe to retry either way.
      counts.droppedRequests += 1;
      req.socket.destroy();
      return;
    }
    counts.forwarded += 1;
    const upstream = http.request(
      new URL(req.url ?? '/', targetUrl),
      { method: req.method, headers: { ...forwardHeaders(req.headers), host: targetUrl.host }, agent },
      (upstreamRes) => {
        if (dropResponse) {
          // The target has answered, so its work is done (and stored, behind a gateway). Read the
          // answer to the end, then hang up on the client without sending any of it.
          upstreamRes.resume();
          upstreamRes.on('end', () => {
            counts.droppedResponses += 1;
            req.socket.destroy();
          });
          return;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, forwardHeaders(upstreamRes.headers));
        upstreamRes.pipe(res);
      },
    );
    upstream.on('error', () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502, { 'content-type': 'text/plain' }).end('lossy proxy: target unreachable');
    });
    req.pipe(upstream);
  });

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const address = server.address();
  const boundPort = typeof address === 'object' && address !== null ? address.port : port;
  return {
    url: `http://${host}:${boundPort}`,
    port: boundPort,
    stats: () => ({ ...counts }),
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
        agent.destroy();
      }),
  };
}
