/**
 * node:http: the bare listener, the same listener behind idempo's node:http adapter, and the
 * diagnostic layers of the latter that cases.js lists.
 */
import { createServer } from 'node:http';
import { nodeListener } from '../lib/app.js';
import { idleEngine } from '../lib/idle-engine.js';
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

/** The node:http adapter's listener over an engine that does nothing else (`idleEngine`). */
async function adapterOnly() {
  const { idempotent } = await import('idempo/node');
  return idempotent(idleEngine(), nodeListener);
}
