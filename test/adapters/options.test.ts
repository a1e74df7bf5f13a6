/**
 * Every option of the options table of docs/options.md through a real socket: a node:http server with
 * `idempotent()` from the node adapter, called with fetch on loopback. The cases live in
 * test/helpers/option-cases.ts, shared with src/engine/options.test.ts (the engine alone).
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, it } from 'vitest';
import { idempotent } from '../../src/adapters/node.js';
import { createIdempotency } from '../../src/engine/engine.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import { controlledStore } from '../helpers/controlled-store.js';
import {
  type CaseContext,
  type Harness,
  headersOf,
  OptionsApp,
  optionCases,
  replyOf,
} from '../helpers/option-cases.js';

let server: Server | undefined;

afterEach(async () => {
  if (!server) return;
  const closing = server;
  server = undefined;
  closing.closeAllConnections();
  await new Promise<void>((resolve) => closing.close(() => resolve()));
});

describe.each(optionCases)('$option', (testCase) => {
  it(`${testCase.what} (node:http socket)`, async () => {
    const context: CaseContext = { store: controlledStore(createMemoryStore()), events: [] };
    const idem = createIdempotency({ store: context.store, ...testCase.options(context) });
    const app = new OptionsApp();
    server = createServer(
      idempotent(idem, async (req, res) => {
        for await (const _chunk of req);
        const answer = await app.handle({
          method: req.method ?? 'GET',
          path: req.url ?? '/',
          header: (name) => {
            const value = req.headers[name];
            return Array.isArray(value) ? value.join(', ') : value;
          },
        });
        // statusCode and setHeader, then end(): nothing is written before idempo has stored the
        // response, so it can still answer instead (a lost lease, a result not stored).
        res.statusCode = answer.status;
        for (const [name, value] of answer.headers) res.setHeader(name, value);
        res.end(answer.body);
      }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const harness: Harness = {
      store: context.store,
      runs: (label) => app.runs(label),
      async send(call) {
        const method = call.method ?? 'POST';
        const response = await fetch(base + (call.path ?? '/orders'), {
          method,
          headers: headersOf(call),
          ...(call.body === undefined || method === 'GET' ? {} : { body: call.body }),
        });
        return replyOf(response);
      },
    };
    await testCase.run(harness, context);
  });
});
