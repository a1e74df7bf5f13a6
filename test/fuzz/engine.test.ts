/**
 * Property tests over the engine (`idem.handle()` with web `Request`s): whatever a client sends —
 * any method, key, header set, target, body bytes (JSON, broken, huge, nested, invalid UTF-8) —
 * under any combination of options, idempo answers without throwing, never with a 5xx of its
 * own, and never replays a response to a request that differs from the one that made it.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createIdempotency } from '../../src/engine/engine.js';
import { defaultFingerprint } from '../../src/engine/fingerprint.js';
import { parseIdempotencyKey } from '../../src/engine/key.js';
import type { IdempotencyEvent, IdempotencyRequest } from '../../src/engine/types.js';
import { fromWebRequest } from '../../src/engine/web.js';
import { createMemoryStore } from '../../src/stores/memory.js';
import { IdempotencyKeyInvalidError } from '../../src/vocabulary/errors.js';
import * as gen from './arbitraries.js';
import { breathe, fuzzParameters, timeoutFor } from './budget.js';

/** What the handler does: answer a status with a body, or throw. */
const plan = fc.record({
  status: fc.constantFrom(200, 201, 202, 204, 400, 404, 409, 422, 500, 503),
  throws: fc.boolean(),
  body: fc.uint8Array({ maxLength: 64 }),
  header: gen.headerValue(20),
});

function answer(p: { status: number; body: Uint8Array; header: string }): Response {
  const nullBody = p.status === 204;
  return new Response(nullBody ? null : (p.body as Uint8Array<ArrayBuffer>), {
    status: p.status,
    headers: { 'x-fuzz': p.header },
  });
}

describe('fuzz: the engine', () => {
  it(
    'answers any request under any options without throwing, and never with a 5xx of its own',
    async () => {
      await fc.assert(
        fc.asyncProperty(gen.request, gen.options, plan, async (input, options, p) => {
          await breathe();
          const store = createMemoryStore();
          const idem = createIdempotency({ store, ...options });
          let ran = false;
          let protectedRun = false;
          const thrown = new Error('handler failed');
          let response: Response;
          try {
            response = await idem.handle(gen.toWebRequest(input, options.header), async (request, context) => {
              ran = true;
              protectedRun = context.key !== '';
              await request.arrayBuffer();
              if (p.throws) throw thrown;
              return answer(p);
            });
          } catch (error) {
            // A request idempo passes through is the application's alone: its error is its own.
            expect(error).toBe(thrown);
            expect(protectedRun).toBe(false);
            await store.close();
            return;
          }
          const bytes = new Uint8Array(await response.arrayBuffer());
          await store.close();
          if (response.status >= 500) {
            // A 5xx comes from the application (its status, or the error it threw), never from idempo.
            expect(ran, `idempo answered ${response.status} without running the handler`).toBe(true);
            expect(p.throws || p.status >= 500).toBe(true);
          }
          if (!ran) {
            // idempo's own answers are 4xx problems (or Stripe errors) with a JSON body.
            expect(response.status).toBeGreaterThanOrEqual(400);
            expect(response.status).toBeLessThan(500);
            expect(() => JSON.parse(new TextDecoder().decode(bytes))).not.toThrow();
          }
          expect(response.headers.get('idempotent-replayed')).toBeNull();
        }),
        fuzzParameters('engine: one request'),
      );
    },
    timeoutFor('engine: one request', 5),
  );

  it(
    'replays a retry of the same request byte for byte, and never replays to a different one',
    async () => {
      const variant = fc.constantFrom('same', 'reordered', 'path', 'query', 'authorization', 'body');
      let checked = 0;
      await fc.assert(
        fc.asyncProperty(gen.request, fc.uuid(), gen.options, plan, variant, async (input, key, options, p, how) => {
          await breathe();
          const first: gen.FuzzRequest = { ...input, method: 'POST', key };
          const opts = { ...options, methods: ['POST'], maxKeyLength: 255, maxBodyBytes: 1_048_576 };
          const store = createMemoryStore();
          const events: IdempotencyEvent[] = [];
          const idem = createIdempotency({ store, ...opts, onEvent: (event) => events.push(event) });
          let runs = 0;
          const handler = async (request: Request) => {
            runs++;
            await request.arrayBuffer();
            if (p.throws) throw new Error('handler failed');
            return answer(p);
          };
          const original = await idem.handle(gen.toWebRequest(first, opts.header), handler);
          const originalBody = new Uint8Array(await original.arrayBuffer());
          const stored = events.some((event) => event.type === 'executed');
          const second = variantOf(first, how);
          const retry = await idem.handle(gen.toWebRequest(second, opts.header), handler);
          const retryBody = new Uint8Array(await retry.arrayBuffer());
          await store.close();
          if (!stored) return;
          checked++;
          if ((how === 'same' || how === 'reordered') && originalBody.length > (opts.maxResponseBytes ?? 1_048_576)) {
            // Too large to keep: the operation is never run again, and a retry is told so.
            expect(retry.status).toBe(410);
            expect(runs).toBe(1);
          } else if (how === 'same' || how === 'reordered') {
            const context = `${how}: ${JSON.stringify({ ...first, body: first.body && Buffer.from(first.body.subarray(0, 200)).toString('latin1') })} retry ${retry.status} ${JSON.stringify(new TextDecoder().decode(retryBody)).slice(0, 300)} options ${JSON.stringify(opts)} plan ${p.status}`;
            expect(retry.headers.get('idempotent-replayed'), context).toBe('true');
            expect(retry.status).toBe(original.status);
            expect(retryBody).toEqual(originalBody);
            expect(runs).toBe(1);
          } else {
            expect(retry.headers.get('idempotent-replayed'), `a ${how} change was replayed`).toBeNull();
            expect(retry.status).toBe(opts.mismatchStatus ?? 422);
            expect(runs).toBe(1);
          }
        }),
        fuzzParameters('engine: a retry and a different request'),
      );
      expect(checked).toBeGreaterThan(0);
    },
    timeoutFor('engine: a retry and a different request', 8),
  );

  it('parses any key header into a key within bounds, or refuses it with IDEMPO_KEY_INVALID', () => {
    const raw = fc.oneof(gen.key, fc.string({ unit: 'binary', maxLength: 300 }));
    fc.assert(
      fc.property(raw, fc.integer({ min: 1, max: 300 }), (header, max) => {
        let key: string;
        try {
          key = parseIdempotencyKey(header, max);
        } catch (error) {
          expect(error).toBeInstanceOf(IdempotencyKeyInvalidError);
          return;
        }
        expect(key.length).toBeGreaterThan(0);
        expect(key.length).toBeLessThanOrEqual(max);
        // A token is its own key, and its Structured Field string means the same key.
        if (!header.trim().startsWith('"')) {
          const quoted = `"${key.replaceAll('\\', '\\\\').replaceAll('"', '\\"')}"`;
          expect(parseIdempotencyKey(quoted, max)).toBe(key);
        }
      }),
      fuzzParameters('engine: key parsing'),
    );
  });

  it(
    'fingerprints the same request alike every time and however its body reaches the engine',
    async () => {
      await fc.assert(
        fc.asyncProperty(gen.request, async (input) => {
          await breathe();
          const request = fromWebRequest(gen.toWebRequest({ ...input, method: 'POST' }));
          const bytes = await request.body(Number.MAX_SAFE_INTEGER);
          const once = defaultFingerprint(request, bytes);
          expect(defaultFingerprint(request, bytes instanceof Uint8Array ? bytes.slice() : bytes)).toBe(once);
          // The query's order does not matter.
          const at = request.url.indexOf('?');
          if (at !== -1) {
            const reversed = request.url
              .slice(at + 1)
              .split('&')
              .reverse()
              .join('&');
            const swapped: IdempotencyRequest = { ...request, url: `${request.url.slice(0, at)}?${reversed}` };
            expect(defaultFingerprint(swapped, bytes)).toBe(once);
          }
          // A JSON body parsed by a framework (Express after express.json(), Fastify) agrees with its bytes.
          if (bytes instanceof Uint8Array && /json/i.test(input.contentType ?? '')) {
            let parsed: unknown;
            try {
              parsed = JSON.parse(new TextDecoder().decode(bytes));
            } catch {
              return;
            }
            if (!/^application\/([\w.+-]+\+)?json\b/i.test(input.contentType ?? '')) return;
            expect(defaultFingerprint(request, { parsed })).toBe(once);
          }
        }),
        fuzzParameters('engine: fingerprint is stable'),
      );
    },
    timeoutFor('engine: fingerprint is stable', 5),
  );
});

/** `input` changed as `how` says: the same request (or its JSON reordered), or a different one. */
function variantOf(input: gen.FuzzRequest, how: string): gen.FuzzRequest {
  const at = input.target.indexOf('?');
  const path = at === -1 ? input.target : input.target.slice(0, at);
  const query = at === -1 ? '' : input.target.slice(at);
  switch (how) {
    case 'reordered':
      return { ...input, body: reordered(input) };
    case 'path':
      return { ...input, target: `${path}${path.endsWith('/') ? '' : '/'}zz${query}` };
    case 'query':
      return { ...input, target: `${path}${query === '' ? '?' : `${query}&`}zz=1` };
    case 'authorization': {
      const headers = input.headers.filter(([name]) => name !== 'authorization');
      const prior = input.headers.find(([name]) => name === 'authorization')?.[1] ?? '';
      return { ...input, headers: [...headers, ['authorization', `Bearer other-${prior.length}${prior}`]] };
    }
    case 'body':
      return { ...input, body: changedBody(input) };
    default:
      return input;
  }
}

const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\b/i;

function parsedJson(input: gen.FuzzRequest): { value: unknown } | undefined {
  if (input.body === null || input.body.length === 0 || !JSON_TYPE.test(input.contentType ?? '')) return undefined;
  try {
    // As the engine and every JSON body parser decode it: invalid UTF-8 as U+FFFD.
    return { value: JSON.parse(new TextDecoder().decode(input.body)) };
  } catch {
    return undefined;
  }
}

/** The same JSON with every object's keys in reverse order and spaces between tokens; other bodies as they are. */
function reordered(input: gen.FuzzRequest): Uint8Array | null {
  const json = parsedJson(input);
  if (json === undefined) return input.body;
  const reverse = (value: unknown): unknown => {
    if (Array.isArray(value)) return value.map(reverse);
    if (value !== null && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const name of Object.keys(value).reverse()) {
        Object.defineProperty(out, name, {
          value: reverse((value as Record<string, unknown>)[name]),
          enumerable: true,
          writable: true,
          configurable: true,
        });
      }
      return out;
    }
    return value;
  };
  let text: string;
  try {
    // Compact, with a leading space: indenting a deeply nested body would push it past maxBodyBytes.
    text = ` ${JSON.stringify(reverse(json.value))}`;
  } catch {
    return input.body; // nested past the stack: keep the bytes
  }
  return new TextEncoder().encode(text);
}

/** A body that means something else: JSON wrapped in another object, any other body one byte longer. */
function changedBody(input: gen.FuzzRequest): Uint8Array {
  const json = parsedJson(input);
  if (json !== undefined && input.body !== null) {
    const text = new TextDecoder().decode(input.body);
    return new TextEncoder().encode(`{"wrapped":${text}}`);
  }
  const bytes = input.body ?? new Uint8Array();
  return new Uint8Array([...bytes, 0x20]);
}
