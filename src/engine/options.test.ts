/**
 * Every option of docs/options.md's table through the engine alone: `idem.handle(new
 * Request(…))`, no server. The cases live in test/helpers/option-cases.ts, shared with
 * test/adapters/options.test.ts, which runs them through a real socket.
 */
import { describe, it } from 'vitest';
import { controlledStore } from '../../test/helpers/controlled-store.js';
import {
  type CaseContext,
  type Harness,
  headersOf,
  OptionsApp,
  optionCases,
  replyOf,
} from '../../test/helpers/option-cases.js';
import { createMemoryStore } from '../stores/memory.js';
import { createIdempotency } from './engine.js';

describe.each(optionCases)('$option', (testCase) => {
  it(`${testCase.what} (engine)`, async () => {
    const context: CaseContext = { store: controlledStore(createMemoryStore()), events: [] };
    const idem = createIdempotency({ store: context.store, ...testCase.options(context) });
    const app = new OptionsApp();
    const harness: Harness = {
      store: context.store,
      runs: (label) => app.runs(label),
      async send(call) {
        const method = call.method ?? 'POST';
        const request = new Request(`http://app.test${call.path ?? '/orders'}`, {
          method,
          headers: headersOf(call),
          ...(call.body === undefined || method === 'GET' ? {} : { body: call.body }),
        });
        const response = await idem.handle(request, async (req) => {
          const url = new URL(req.url);
          const answer = await app.handle({
            method: req.method,
            path: url.pathname + url.search,
            header: (name) => req.headers.get(name) ?? undefined,
          });
          return new Response(answer.body, { status: answer.status, headers: answer.headers });
        });
        return replyOf(response);
      },
    };
    await testCase.run(harness, context);
  });
});
