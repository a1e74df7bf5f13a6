/**
 * The gateway comparison: an upstream (the bare node:http route), a plain reverse proxy in front
 * of it (node:http + an undici Agent, streaming both ways: what one would write without idempo),
 * and the idempo gateway in front of the same upstream.
 */
import { createServer } from 'node:http';
import { Agent } from 'undici';
import { nodeListener } from '../lib/app.js';
import { openIdempoStore } from '../lib/stores.js';
import { listen } from './listen.js';

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host']);

export async function start({ variant, store: storeName, runId, upstreamPort, logLevel }) {
  const upstream = `http://127.0.0.1:${upstreamPort}`;
  switch (variant) {
    case 'upstream':
      return listen(createServer(nodeListener));

    case 'plain': {
      const agent = new Agent({ keepAliveTimeout: 10_000, connections: 128 });
      const server = createServer(async (req, res) => {
        const headers = {};
        for (const name in req.headers) if (!HOP_BY_HOP.has(name)) headers[name] = req.headers[name];
        headers['x-forwarded-for'] = req.socket.remoteAddress;
        headers['x-forwarded-host'] = req.headers.host;
        headers['x-forwarded-proto'] = 'http';
        try {
          const response = await agent.request({
            origin: upstream,
            path: req.url,
            method: req.method,
            headers,
            body: req.method === 'GET' || req.method === 'HEAD' ? null : req,
          });
          const outgoing = [];
          for (const name in response.headers) {
            if (HOP_BY_HOP.has(name)) continue;
            const value = response.headers[name];
            if (Array.isArray(value)) for (const item of value) outgoing.push(name, item);
            else outgoing.push(name, value);
          }
          res.writeHead(response.statusCode, outgoing);
          // pipe(), not pipeline(), as the gateway does: on Node 20 pipeline() costs an
          // AbortController and a DOMException per call, and this baseline should be the best
          // plain proxy, so the ratio shows what idempo costs, not what pipeline() does.
          response.body.on('error', (error) => res.destroy(error));
          res.on('close', () => {
            if (!response.body.readableEnded) response.body.destroy();
          });
          response.body.pipe(res);
        } catch {
          if (!res.headersSent) res.writeHead(502).end();
          else res.destroy();
        }
      });
      return listen(server, () => agent.close());
    }

    case 'gateway': {
      const { startGateway } = await import('idempo/gateway');
      const opened = await openIdempoStore(storeName, runId);
      // As `idempo serve` runs it: its default logger, pino to stdout at LOG_LEVEL (the harness
      // sends the host's stdout to /dev/null).
      process.env.LOG_LEVEL = logLevel ?? 'info';
      const gateway = await startGateway({ upstream, port: 0, store: opened.store });
      return {
        port: gateway.port,
        async close() {
          gateway.server.closeAllConnections();
          await gateway.close();
          await opened.close();
        },
      };
    }

    default:
      throw new Error(`proxy: unknown variant ${variant}`);
  }
}
