/**
 * The gateway comparison: an upstream (the bare node:http route), a plain reverse proxy in front
 * of it (node:http + an undici Agent, streaming both ways: what one would write without idempo),
 * and the idempo gateway in front of the same upstream.
 */
import { createServer } from 'node:http';
import { pipeline } from 'node:stream/promises';
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
          await pipeline(response.body, res);
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
      const { default: pino } = await import('pino');
      // As `idempo serve` runs it: pino to stdout (the harness sends the host's stdout to /dev/null).
      const logger = pino({ level: logLevel ?? 'info' });
      const gateway = await startGateway({ upstream, port: 0, store: opened.store, logger });
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
