/**
 * One case per option of the options table of docs/options.md, written once against a small transport
 * interface and run twice: through the engine (`idem.handle(new Request(…))`, in
 * src/engine/options.test.ts) and through a real socket (a node:http server with `idempotent()`,
 * in test/adapters/options.test.ts).
 *
 * The app behind both is the same: it counts its runs per `x-count` label (the key by default)
 * and answers 201 with a JSON body unique to the run, steered by request headers, which are not
 * part of the fingerprint, so a retry may ask for something else:
 *
 *   x-status          the status to answer (default 201)
 *   x-delay-ms        how long to work before answering
 *   x-size            answer this many bytes of `x` instead of JSON
 *   x-extra-headers   a JSON object of response headers to add
 */
import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import type { IdempotencyEvent, IdempotencyOptions } from '../../src/engine/types.js';
import type { IdempotencyStore } from '../../src/vocabulary/index.js';
import type { ControlledStore } from './controlled-store.js';

/** What the app sees of a request, whatever the transport. */
export interface AppRequest {
  method: string;
  path: string;
  header(name: string): string | undefined;
}

/** What the app answers, whatever the transport. */
export interface AppResponse {
  status: number;
  headers: [string, string][];
  body: string;
}

/** The app both transports serve; it counts runs per `x-count` label. */
export class OptionsApp {
  readonly #runs = new Map<string, number>();

  runs(label: string): number {
    return this.#runs.get(label) ?? 0;
  }

  async handle(request: AppRequest): Promise<AppResponse> {
    const label = request.header('x-count') ?? '(none)';
    const run = (this.#runs.get(label) ?? 0) + 1;
    this.#runs.set(label, run);
    const delay = Number(request.header('x-delay-ms') ?? 0);
    if (delay > 0) await sleep(delay);
    const status = Number(request.header('x-status') ?? 201);
    const headers: [string, string][] = [['date', new Date().toUTCString()]];
    const extra = JSON.parse(request.header('x-extra-headers') ?? '{}') as Record<string, string>;
    for (const [name, value] of Object.entries(extra)) headers.push([name, value]);
    const size = request.header('x-size');
    if (size !== undefined) {
      headers.push(['content-type', 'text/plain']);
      return { status, headers, body: 'x'.repeat(Number(size)) };
    }
    headers.push(['content-type', 'application/json']);
    return { status, headers, body: JSON.stringify({ run, label, id: randomUUID(), path: request.path }) };
  }
}

/** One request as a case sends it. */
export interface Call {
  method?: string;
  path?: string;
  key?: string;
  /** The header the key goes in (default `idempotency-key`). */
  keyHeader?: string;
  body?: string;
  /** The label the app counts this run under (default: the key). */
  count?: string;
  headers?: Record<string, string>;
}

export interface Reply {
  status: number;
  headers: Headers;
  body: string;
  replayed: boolean;
  json(): Record<string, unknown>;
}

/** What a case works with: a transport to the app under the case's options. */
export interface Harness {
  send(call: Call): Promise<Reply>;
  /** How often the app ran under a label. */
  runs(label: string): number;
  /** The memory store behind the engine (unless the case brought its own), which a case may stall. */
  store: ControlledStore;
}

export interface CaseContext {
  store: ControlledStore;
  /** Where a case that sets `onEvent` may collect events. */
  events: IdempotencyEvent[];
}

export interface OptionCase {
  /** The option, as the table in docs/options.md names it. */
  option: string;
  /** What the case shows. */
  what: string;
  options(context: CaseContext): Partial<IdempotencyOptions>;
  run(harness: Harness, context: CaseContext): Promise<void>;
}

/** The headers of a call, as both transports send them. */
export function headersOf(call: Call): Record<string, string> {
  const headers: Record<string, string> = { 'content-type': 'application/json', ...call.headers };
  if (call.key !== undefined) headers[call.keyHeader ?? 'idempotency-key'] = call.key;
  headers['x-count'] = call.count ?? call.key ?? '(none)';
  return headers;
}

/** A web `Response` as a case reads it (both transports end with one). */
export async function replyOf(response: Response): Promise<Reply> {
  const body = await response.text();
  return {
    status: response.status,
    headers: response.headers,
    body,
    replayed: response.headers.get('idempotent-replayed') === 'true',
    json: () => JSON.parse(body) as Record<string, unknown>,
  };
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const BODY = '{"amount":100}';
const key = () => `opt-${randomUUID()}`;

function expectProblem(reply: Reply, status: number, code: string): Record<string, unknown> {
  expect(reply.status, reply.body).toBe(status);
  expect(reply.replayed).toBe(false);
  const problem = reply.json();
  expect(problem).toMatchObject({ status, code });
  return problem;
}

function expectReplayOf(replay: Reply, first: Reply): void {
  expect(replay.replayed).toBe(true);
  expect(replay.status).toBe(first.status);
  expect(replay.body).toBe(first.body);
}

/** Sends, then again while the answer is 409 (the first run still finishing), for up to 3 s. */
async function sendUntilSettled(h: Harness, call: Call): Promise<Reply> {
  for (let waited = 0; ; waited += 25) {
    const reply = await h.send(call);
    if (reply.status !== 409 || waited > 3_000) return reply;
    await sleep(25);
  }
}

const failingStore: IdempotencyStore = {
  claim: () => Promise.reject(new Error('store unreachable')),
  complete: () => Promise.reject(new Error('store unreachable')),
  release: () => Promise.reject(new Error('store unreachable')),
  renew: () => Promise.reject(new Error('store unreachable')),
  saveStep: () => Promise.reject(new Error('store unreachable')),
};

export const optionCases: OptionCase[] = [
  {
    option: 'store',
    what: 'keys live in the store it is given: a replay is one claim there, no run',
    options: ({ store }) => ({ store }),
    async run(h) {
      const k = key();
      const first = await h.send({ key: k, body: BODY });
      expect(first.status).toBe(201);
      const claims = h.store.claims;
      expectReplayOf(await h.send({ key: k, body: BODY }), first);
      expect(h.store.claims).toBe(claims + 1);
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'methods',
    what: "['PUT'] protects PUT and passes POST through, key or not",
    options: () => ({ methods: ['PUT'] }),
    async run(h) {
      const put = key();
      const first = await h.send({ method: 'PUT', key: put, body: BODY });
      expect(first.status).toBe(201);
      expectReplayOf(await h.send({ method: 'PUT', key: put, body: BODY }), first);
      expect(h.runs(put)).toBe(1);
      const post = key();
      for (let i = 0; i < 2; i++) {
        const reply = await h.send({ method: 'POST', key: post, body: BODY });
        expect(reply.status).toBe(201);
        expect(reply.replayed).toBe(false);
      }
      expect(h.runs(post)).toBe(2);
    },
  },
  {
    option: 'required',
    what: 'true: a request without a key gets 400 IDEMPO_KEY_MISSING and runs nothing',
    options: () => ({ required: true }),
    async run(h) {
      const label = key();
      expectProblem(await h.send({ body: BODY, count: label }), 400, 'IDEMPO_KEY_MISSING');
      expect(h.runs(label)).toBe(0);
      expect((await h.send({ key: key(), body: BODY })).status).toBe(201);
    },
  },
  {
    option: 'required',
    what: 'a function decides per request',
    options: () => ({ required: (request) => request.url.startsWith('/pay') }),
    async run(h) {
      const label = key();
      expectProblem(await h.send({ path: '/pay', body: BODY, count: label }), 400, 'IDEMPO_KEY_MISSING');
      expect(h.runs(label)).toBe(0);
      const browse = await h.send({ path: '/browse', body: BODY, count: label });
      expect(browse.status).toBe(201);
      expect(h.runs(label)).toBe(1);
    },
  },
  {
    option: 'header',
    what: 'the key is read from the named header; Idempotency-Key alone then means no key',
    options: () => ({ header: 'x-request-key' }),
    async run(h) {
      const k = key();
      const first = await h.send({ key: k, keyHeader: 'x-request-key', body: BODY });
      expect(first.status).toBe(201);
      expectReplayOf(await h.send({ key: k, keyHeader: 'x-request-key', body: BODY }), first);
      expect(h.runs(k)).toBe(1);
      const other = key();
      for (let i = 0; i < 2; i++) {
        const reply = await h.send({ key: other, body: BODY });
        expect(reply.status).toBe(201);
        expect(reply.replayed).toBe(false);
      }
      expect(h.runs(other)).toBe(2);
    },
  },
  {
    option: 'maxKeyLength',
    what: '8: a 9-character key gets 400 IDEMPO_KEY_INVALID, an 8-character one runs',
    options: () => ({ maxKeyLength: 8 }),
    async run(h) {
      const long = randomUUID().slice(0, 9);
      expectProblem(await h.send({ key: long, body: BODY }), 400, 'IDEMPO_KEY_INVALID');
      expect(h.runs(long)).toBe(0);
      const fits = long.slice(0, 8);
      expect((await h.send({ key: fits, body: BODY })).status).toBe(201);
      expect(h.runs(fits)).toBe(1);
    },
  },
  {
    option: 'lease',
    what: 'a short lease is renewed while the handler runs: a duplicate past it still gets 409',
    options: () => ({ lease: 300 }),
    async run(h) {
      const k = key();
      const first = h.send({ key: k, body: BODY, headers: { 'x-delay-ms': '900' } });
      await sleep(550);
      expectProblem(await h.send({ key: k, body: BODY }), 409, 'IDEMPO_CONFLICT');
      expect((await first).status).toBe(201);
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'lease',
    what: 'an owner that cannot renew loses its key once the lease passes: a duplicate takes over, the owner gets 409 IDEMPO_LEASE_LOST',
    options: () => ({ lease: 300 }),
    async run(h) {
      const k = key();
      h.store.renewalsFail = true;
      try {
        const first = h.send({ key: k, body: BODY, headers: { 'x-delay-ms': '700' } });
        await sleep(100);
        expectProblem(await h.send({ key: k, body: BODY }), 409, 'IDEMPO_CONFLICT');
        await sleep(350);
        const taken = await h.send({ key: k, body: BODY });
        expect(taken.status).toBe(201);
        expect(taken.replayed).toBe(false);
        expect(taken.json().run).toBe(2);
        expectProblem(await first, 409, 'IDEMPO_LEASE_LOST');
        expectReplayOf(await h.send({ key: k, body: BODY }), taken);
        expect(h.runs(k)).toBe(2);
      } finally {
        h.store.renewalsFail = false;
      }
    },
  },
  {
    option: 'ttl',
    what: 'a completed response is replayed within its ttl and forgotten after it',
    options: () => ({ ttl: 300, lease: 300 }),
    async run(h) {
      const k = key();
      const first = await h.send({ key: k, body: BODY });
      expectReplayOf(await h.send({ key: k, body: BODY }), first);
      await sleep(450);
      const later = await h.send({ key: k, body: BODY });
      expect(later.status).toBe(201);
      expect(later.replayed).toBe(false);
      expect(h.runs(k)).toBe(2);
    },
  },
  {
    option: 'concurrent',
    what: "'wait': a duplicate waits for the first and replays its response",
    options: () => ({ concurrent: 'wait' }),
    async run(h) {
      const k = key();
      const first = h.send({ key: k, body: BODY, headers: { 'x-delay-ms': '300' } });
      await sleep(80);
      const waited = await h.send({ key: k, body: BODY });
      const original = await first;
      expect(original.status).toBe(201);
      expectReplayOf(waited, original);
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'waitTimeout',
    what: "with 'wait', a duplicate still waiting when it passes gets 409 with Retry-After",
    options: () => ({ concurrent: 'wait', waitTimeout: 200 }),
    async run(h) {
      const k = key();
      const first = h.send({ key: k, body: BODY, headers: { 'x-delay-ms': '900' } });
      await sleep(50);
      const duplicate = await h.send({ key: k, body: BODY });
      expectProblem(duplicate, 409, 'IDEMPO_CONFLICT');
      expect(Number(duplicate.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect((await first).status).toBe(201);
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'releaseOn',
    what: 'numbers: [404] releases a 404 so the retry runs, and keeps a 503 (no longer listed)',
    options: () => ({ releaseOn: [404] }),
    async run(h) {
      const k = key();
      expect((await h.send({ key: k, body: BODY, headers: { 'x-status': '404' } })).status).toBe(404);
      const retry = await h.send({ key: k, body: BODY });
      expect(retry.status).toBe(201);
      expect(retry.replayed).toBe(false);
      expect(h.runs(k)).toBe(2);
      const kept = key();
      const unavailable = await h.send({ key: kept, body: BODY, headers: { 'x-status': '503' } });
      expect(unavailable.status).toBe(503);
      expectReplayOf(await h.send({ key: kept, body: BODY }), unavailable);
      expect(h.runs(kept)).toBe(1);
    },
  },
  {
    option: 'releaseOn',
    what: "classes: ['4xx'] releases a 422 so the retry runs, and keeps a 500",
    options: () => ({ releaseOn: ['4xx'] }),
    async run(h) {
      const k = key();
      expect((await h.send({ key: k, body: BODY, headers: { 'x-status': '422' } })).status).toBe(422);
      const retry = await h.send({ key: k, body: BODY });
      expect(retry.status).toBe(201);
      expect(retry.replayed).toBe(false);
      expect(h.runs(k)).toBe(2);
      const kept = key();
      const failed = await h.send({ key: kept, body: BODY, headers: { 'x-status': '500' } });
      expect(failed.status).toBe(500);
      expectReplayOf(await h.send({ key: kept, body: BODY }), failed);
      expect(h.runs(kept)).toBe(1);
    },
  },
  {
    option: 'onStoreError',
    what: "'fail-open' runs the handler unprotected when the store fails, and reports it",
    options: ({ events }) => ({ store: failingStore, onStoreError: 'fail-open', onEvent: (e) => events.push(e) }),
    async run(h, { events }) {
      const k = key();
      for (let i = 0; i < 2; i++) {
        const reply = await h.send({ key: k, body: BODY });
        expect(reply.status).toBe(201);
        expect(reply.replayed).toBe(false);
      }
      expect(h.runs(k)).toBe(2);
      expect(events.filter((e) => e.type === 'store_error' && e.action === 'fail-open')).toHaveLength(2);
    },
  },
  {
    option: 'onStoreError',
    what: "'fail-closed' (the default) answers 503 IDEMPO_STORE_UNAVAILABLE with Retry-After and runs nothing",
    options: () => ({ store: failingStore }),
    async run(h) {
      const k = key();
      const reply = await h.send({ key: k, body: BODY });
      expectProblem(reply, 503, 'IDEMPO_STORE_UNAVAILABLE');
      expect(Number(reply.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(h.runs(k)).toBe(0);
    },
  },
  {
    option: 'mismatchStatus',
    what: '400: a key reused for another body gets 400 IDEMPO_MISMATCH instead of 422',
    options: () => ({ mismatchStatus: 400 }),
    async run(h) {
      const k = key();
      const first = await h.send({ key: k, body: '{"amount":1}' });
      expectProblem(await h.send({ key: k, body: '{"amount":2}' }), 400, 'IDEMPO_MISMATCH');
      expectReplayOf(await h.send({ key: k, body: '{"amount":1}' }), first);
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'maxBodyBytes',
    what: '64: a larger keyed body gets 413 IDEMPO_BODY_TOO_LARGE and runs nothing',
    options: () => ({ maxBodyBytes: 64 }),
    async run(h) {
      const k = key();
      const big = JSON.stringify({ pad: 'x'.repeat(64) });
      expectProblem(await h.send({ key: k, body: big }), 413, 'IDEMPO_BODY_TOO_LARGE');
      expect(h.runs(k)).toBe(0);
      expect((await h.send({ key: key(), body: BODY })).status).toBe(201);
    },
  },
  {
    option: 'maxResponseBytes',
    what: '1000: a larger response is sent whole, its key kept completed; retries get 410 naming the status and run nothing',
    options: () => ({ maxResponseBytes: 1_000 }),
    async run(h) {
      const k = key();
      const first = await h.send({ key: k, body: BODY, headers: { 'x-size': '5000' } });
      expect(first.status).toBe(201);
      expect(first.replayed).toBe(false);
      expect(first.body).toBe('x'.repeat(5_000));
      for (let i = 0; i < 2; i++) {
        const retry = await h.send({ key: k, body: BODY, headers: { 'x-size': '5000' } });
        expect(retry.status).toBe(410);
        expect(retry.replayed).toBe(true);
        expect(retry.json()).toMatchObject({ status: 410, code: 'IDEMPO_RESPONSE_NOT_KEPT', originalStatus: 201 });
      }
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'completeTimeout',
    what: 'a completion still failing when it passes: 503 IDEMPO_RESULT_NOT_STORED, the key kept, and the result stored once the store answers',
    options: () => ({ completeTimeout: 300, lease: '5s' }),
    async run(h) {
      const k = key();
      h.store.completionsFail = true;
      try {
        const first = await h.send({ key: k, body: BODY });
        expectProblem(first, 503, 'IDEMPO_RESULT_NOT_STORED');
        expect(Number(first.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        expectProblem(await h.send({ key: k, body: BODY }), 409, 'IDEMPO_CONFLICT');
      } finally {
        h.store.completionsFail = false;
      }
      // idempo went on trying while the lease held the key: the retry replays the run's own result.
      const retry = await sendUntilSettled(h, { key: k, body: BODY });
      expect(retry.status).toBe(201);
      expect(retry.replayed).toBe(true);
      expect(retry.json()).toMatchObject({ run: 1, label: k });
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'completeTimeout',
    what: 'longer than the lease, with the store down for the owner: the caller still gets 503, never a success no retry replays',
    options: () => ({ completeTimeout: '2s', lease: 400 }),
    async run(h) {
      const k = key();
      h.store.completionsFail = true;
      h.store.renewalsFail = true;
      try {
        const first = await h.send({ key: k, body: BODY });
        expectProblem(first, 503, 'IDEMPO_RESULT_NOT_STORED');
      } finally {
        h.store.completionsFail = false;
        h.store.renewalsFail = false;
      }
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'completeTimeout',
    what: 'a completion the store applied but whose reply was lost is retried: the caller gets its own success',
    options: () => ({ completeTimeout: '2s', lease: '5s' }),
    async run(h) {
      const k = key();
      h.store.completionRepliesToLose = 1;
      const first = await h.send({ key: k, body: BODY });
      expect(first.status, first.body).toBe(201);
      expect(first.replayed).toBe(false);
      expectReplayOf(await h.send({ key: k, body: BODY }), first);
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'replayHeaders',
    what: "{ exclude: ['x-secret'] } replaces the list: x-secret is not replayed, Set-Cookie now is",
    options: () => ({ replayHeaders: { exclude: ['x-secret'] } }),
    async run(h) {
      const k = key();
      const extra = { 'x-extra-headers': JSON.stringify({ 'x-secret': 's3', 'set-cookie': 'a=1', 'x-public': 'p' }) };
      const first = await h.send({ key: k, body: BODY, headers: extra });
      expect(first.headers.get('x-secret')).toBe('s3');
      const replay = await h.send({ key: k, body: BODY, headers: extra });
      expectReplayOf(replay, first);
      expect(replay.headers.get('x-public')).toBe('p');
      expect(replay.headers.get('set-cookie')).toBe('a=1');
      expect(replay.headers.get('x-secret')).toBeNull();
    },
  },
  {
    option: 'replayHeaders',
    what: 'by default Set-Cookie is not replayed and Date is regenerated: fresh on a replay seconds later',
    options: () => ({}),
    async run(h) {
      const k = key();
      const extra = { 'x-extra-headers': JSON.stringify({ 'set-cookie': 'a=1', 'x-public': 'p' }) };
      const first = await h.send({ key: k, body: BODY, headers: extra });
      expect(first.headers.get('set-cookie')).toBe('a=1');
      const firstDate = Date.parse(first.headers.get('date') ?? '');
      expect(Number.isNaN(firstDate)).toBe(false);
      await sleep(1_100); // `Date` has a resolution of one second
      const replay = await h.send({ key: k, body: BODY, headers: extra });
      const now = Date.now();
      expectReplayOf(replay, first);
      expect(replay.headers.get('x-public')).toBe('p');
      expect(replay.headers.get('set-cookie')).toBeNull();
      expect(replay.headers.get('date')).not.toBeNull();
      const replayDate = Date.parse(replay.headers.get('date') ?? '');
      expect(replayDate).toBeGreaterThan(firstDate);
      // Truncated to its second: at most a second (and a little transit) before now, never after.
      expect(replayDate).toBeLessThanOrEqual(now);
      expect(now - replayDate).toBeLessThan(1_200);
    },
  },
  {
    option: 'fingerprint',
    what: 'a custom fingerprint decides what counts as the same request (here: the path alone)',
    options: () => ({ fingerprint: (request) => request.url }),
    async run(h) {
      const k = key();
      const first = await h.send({ key: k, body: '{"amount":1}' });
      expectReplayOf(await h.send({ key: k, body: '{"amount":2}' }), first);
      expectProblem(await h.send({ key: k, path: '/elsewhere', body: '{"amount":1}' }), 422, 'IDEMPO_MISMATCH');
      expect(h.runs(k)).toBe(1);
    },
  },
  {
    option: 'scope',
    what: 'keys are namespaced per scope: one key, two tenants, two runs, each replayed to its own tenant',
    options: () => ({ scope: (request) => request.header('x-tenant') }),
    async run(h) {
      const k = key();
      const call = (tenant: string): Call => ({
        key: k,
        body: BODY,
        count: `${k}:${tenant}`,
        headers: { 'x-tenant': tenant },
      });
      const a = await h.send(call('a'));
      const b = await h.send(call('b'));
      expect([a.status, b.status, a.replayed, b.replayed]).toEqual([201, 201, false, false]);
      expect(a.body).not.toBe(b.body);
      expectReplayOf(await h.send(call('a')), a);
      expectReplayOf(await h.send(call('b')), b);
      expect([h.runs(`${k}:a`), h.runs(`${k}:b`)]).toEqual([1, 1]);
    },
  },
  {
    option: 'errorFormat',
    what: "'stripe' answers idempo's errors as { error: { type, code, message } }",
    options: () => ({ errorFormat: 'stripe' }),
    async run(h) {
      const k = key();
      await h.send({ key: k, body: '{"amount":1}' });
      const reply = await h.send({ key: k, body: '{"amount":2}' });
      expect(reply.status).toBe(422);
      expect(reply.headers.get('content-type')).toMatch(/^application\/json/);
      expect(reply.json()).toEqual({
        error: { type: 'idempotency_error', code: 'idempo_mismatch', message: expect.any(String) },
      });
    },
  },
  {
    option: 'errorFormat',
    what: 'a function shapes every idempo error response',
    options: () => ({
      errorFormat: (error) => ({
        status: error.status,
        headers: [['content-type', 'application/vnd.shop.error+json']],
        body: new TextEncoder().encode(JSON.stringify({ failure: error.code })),
      }),
    }),
    async run(h) {
      const reply = await h.send({ key: 'two words', body: BODY });
      expect(reply.status).toBe(400);
      expect(reply.headers.get('content-type')).toBe('application/vnd.shop.error+json');
      expect(reply.json()).toEqual({ failure: 'IDEMPO_KEY_INVALID' });
    },
  },
  {
    option: 'onEvent',
    what: 'receives one event per outcome: executed, replayed, mismatch',
    options: ({ events }) => ({ onEvent: (e) => events.push(e) }),
    async run(h, { events }) {
      const k = key();
      await h.send({ key: k, body: '{"amount":1}' });
      await h.send({ key: k, body: '{"amount":1}' });
      await h.send({ key: k, body: '{"amount":2}' });
      const mine = events.filter((e) => e.key === k);
      expect(mine.map((e) => e.type)).toEqual(['executed', 'replayed', 'mismatch']);
      expect(mine[0]).toMatchObject({ method: 'POST', status: 201 });
    },
  },
];
