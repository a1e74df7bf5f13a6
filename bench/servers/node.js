/** node:http: the bare listener, and the same listener behind idempo's node:http adapter. */
import { createServer } from 'node:http';
import { nodeListener } from '../lib/app.js';
import { openIdempoStore } from '../lib/stores.js';
import { listen } from './listen.js';

export async function start({ variant, store: storeName, runId }) {
  if (variant === 'bare') return listen(createServer(nodeListener));
  if (variant === 'idempo') {
    const { createIdempotency } = await import('idempo');
    const { idempotent } = await import('idempo/node');
    const opened = await openIdempoStore(storeName, runId);
    const idem = createIdempotency({ store: opened.store });
    return listen(createServer(idempotent(idem, nodeListener)), opened.close);
  }
  throw new Error(`node: unknown variant ${variant}`);
}
