/**
 * node:http: the bare listener, the same listener behind idempo's node:http adapter, and the
 * diagnostic layers of the latter that cases.js lists.
 */
import { createServer } from 'node:http';
import { nodeListener } from '../lib/app.js';
import { openIdempoStore } from '../lib/stores.js';
import { listen } from './listen.js';

export async function start({ variant, store: storeName, runId, fixedFingerprint }) {
  if (variant === 'bare') return listen(createServer(nodeListener));
  if (variant === 'idempo') {
    const { createIdempotency } = await import('idempo');
    const { idempotent } = await import('idempo/node');
    const opened = await openIdempoStore(storeName, runId);
    const idem = createIdempotency({
      store: opened.store,
      ...(fixedFingerprint ? { fingerprint: () => 'fixed' } : {}),
    });
    return listen(createServer(idempotent(idem, nodeListener)), opened.close);
  }
  if (variant === 'adapter-only') return listen(createServer(await adapterOnly()));
  throw new Error(`node: unknown variant ${variant}`);
}

/**
 * The node:http adapter's listener over an engine that does nothing else: every request has its
 * body watched and its response captured as for a fresh key, and no key is claimed or stored.
 */
async function adapterOnly() {
  const { idempotent } = await import('idempo/node');
  const execution = {
    action: 'execute',
    context: undefined,
    body: null,
    commitNow: () => undefined,
    commit: async () => undefined,
    abort: async () => {},
    clientGone: () => {},
    track: () => {},
  };
  const engine = {
    async begin(request) {
      await request.body(1 << 20);
      return execution;
    },
    handle: () => Promise.reject(new Error('not used')),
    formatError: () => ({ status: 500, headers: [], body: null }),
    limits: { maxBodyBytes: 1 << 20, maxResponseBytes: 1 << 20 },
  };
  return idempotent(engine, nodeListener);
}
