/**
 * The gateway's admin listener (`--admin-port`): a second HTTP server, on its own port and
 * interface, for what operators ask the gateway itself (metrics, key usage) and never the
 * upstream. Nothing under the proxied namespace is taken: the upstream keeps every path,
 * `/metrics` included. Routes are a small table, so later ones (an admin page, key lookups)
 * are one entry each.
 *
 * @module
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/** One admin route: an exact path and method, and what answers it. */
export interface AdminRoute {
  readonly method: 'GET' | 'POST' | 'DELETE';
  /** The exact path (the query is passed in `url`). */
  readonly path: string;
  /** One line for the route list (`GET /`). */
  readonly description: string;
  handle(req: IncomingMessage, res: ServerResponse, url: URL): void | Promise<void>;
}

/** A running admin listener. */
export interface AdminServer {
  readonly url: string;
  readonly port: number;
  readonly server: Server;
  close(): Promise<void>;
}

/** Sends `body` as JSON, uncached. */
export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

function problem(res: ServerResponse, status: number, title: string, detail: string, headers = {}): void {
  res.writeHead(status, { 'content-type': 'application/problem+json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify({ type: 'about:blank', title, status, detail }));
}

/**
 * The admin listener's request handler: exact path and method; `GET /` lists the routes;
 * `404` for an unknown path, `405` with `Allow` for a known path and another method.
 */
export function adminRouter(routes: readonly AdminRoute[]): (req: IncomingMessage, res: ServerResponse) => void {
  const index: AdminRoute = {
    method: 'GET',
    path: '/',
    description: 'this list',
    handle: (_req, res) =>
      sendJson(res, 200, {
        routes: all.map((route) => ({ method: route.method, path: route.path, description: route.description })),
      }),
  };
  const all = [index, ...routes];
  return function adminRequest(req, res) {
    const url = new URL(req.url ?? '/', 'http://admin');
    const matching = all.filter((route) => route.path === url.pathname);
    const method = req.method === 'HEAD' ? 'GET' : req.method;
    const route = matching.find((candidate) => candidate.method === method);
    if (route === undefined) {
      if (matching.length === 0) problem(res, 404, 'Not Found', `No admin route ${url.pathname}; GET / lists them.`);
      else
        problem(
          res,
          405,
          'Method Not Allowed',
          `${url.pathname} answers ${matching.map((r) => r.method).join(', ')}.`,
          {
            allow: matching.map((r) => r.method).join(', '),
          },
        );
      return;
    }
    Promise.resolve()
      .then(() => route.handle(req, res, url))
      .catch((error: unknown) => {
        if (res.headersSent) res.destroy();
        else problem(res, 500, 'Internal Server Error', error instanceof Error ? error.message : String(error));
      });
  };
}

/** Starts the admin listener on `host:port` with `routes`. */
export async function startAdmin({
  port,
  host,
  routes,
}: {
  port: number;
  host: string;
  routes: readonly AdminRoute[];
}): Promise<AdminServer> {
  const server = createServer(adminRouter(routes));
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EADDRNOTAVAIL') {
      throw new IdempotencyConfigInvalidError(
        `--admin-host: ${JSON.stringify(host)} is not ${code === 'EADDRNOTAVAIL' ? 'an address of this machine' : 'a host name this machine resolves'} (${code}); use an interface address such as 127.0.0.1.`,
        { cause: error },
      );
    }
    throw new IdempotencyConfigInvalidError(
      `--admin-port: ${host}:${port} cannot be listened on (${code ?? String(error)}); pick another with --admin-port.`,
      { cause: error },
    );
  }
  const address = server.address() as AddressInfo;
  const shown = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${shown}:${address.port}`,
    port: address.port,
    server,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
