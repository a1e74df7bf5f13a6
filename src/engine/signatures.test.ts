import { describe, expect, it } from 'vitest';
import { signRequest } from '../signatures/index.js';
import { createMemoryStore } from '../stores/memory.js';
import type { IdempotencyStore } from '../vocabulary/index.js';
import { createIdempotency } from './engine.js';
import type { IdempotencyEvent, SignatureOptions } from './types.js';

const secret = new TextEncoder().encode('a shared secret of enough length!');
const keys: SignatureOptions['keys'] = [{ keyid: 'client-1', alg: 'hmac-sha256', key: secret }];

/** A memory store that counts claims: a refused signature must claim nothing. */
function countingStore(): IdempotencyStore & { claims: number } {
  const inner = createMemoryStore();
  const store = Object.assign(Object.create(inner) as IdempotencyStore, { claims: 0 }) as IdempotencyStore & {
    claims: number;
  };
  store.claim = (input) => {
    store.claims++;
    return inner.claim(input);
  };
  return store;
}

async function signedRequest(
  body: string,
  options: { key?: string; keyid?: string; created?: number; tamper?: (headers: Headers) => void } = {},
): Promise<Request> {
  const url = 'http://api.test/payments?currency=eur';
  const headers = new Headers({ 'idempotency-key': options.key ?? 'k-1', 'content-type': 'application/json' });
  const bytes = new TextEncoder().encode(body);
  await signRequest(
    { method: 'POST', url, headers, body: bytes },
    { keyid: options.keyid ?? 'client-1', alg: 'hmac-sha256', key: secret },
    options.created === undefined ? {} : { created: options.created },
  );
  options.tamper?.(headers);
  return new Request(url, { method: 'POST', headers, body: bytes });
}

function setup(signatures: Partial<SignatureOptions> = {}) {
  const store = countingStore();
  const events: IdempotencyEvent[] = [];
  let runs = 0;
  const idem = createIdempotency({
    store,
    signatures: { keys, ...signatures },
    onEvent: (event) => events.push(event),
  });
  const handle = (request: Request) =>
    idem.handle(request, async () => {
      runs++;
      return Response.json({ run: runs }, { status: 201 });
    });
  return { store, events, handle, runs: () => runs };
}

describe('signatures option', () => {
  it('runs a signed request and replays a retry of it within maxAge', async () => {
    const { handle, runs } = setup();
    const request = await signedRequest('{"amount":1}');
    const again = request.clone();
    expect((await handle(request)).status).toBe(201);
    const replay = await handle(again);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(runs()).toBe(1);
  });

  it('answers an unsigned keyed request 401 IDEMPO_SIGNATURE_MISSING, claiming nothing', async () => {
    const { handle, store, events } = setup();
    const response = await handle(
      new Request('http://api.test/p', { method: 'POST', headers: { 'idempotency-key': 'k' }, body: '{}' }),
    );
    expect(response.status).toBe(401);
    expect(response.headers.get('content-type')).toBe('application/problem+json');
    expect(await response.json()).toMatchObject({ code: 'IDEMPO_SIGNATURE_MISSING', status: 401 });
    expect(store.claims).toBe(0);
    expect(events.map((e) => [e.type, e.reason])).toEqual([['invalid_signature', 'IDEMPO_SIGNATURE_MISSING']]);
  });

  it('refuses a key moved to another request, another body, an unknown keyid, an old signature', async () => {
    const { handle, store, runs } = setup({ maxAge: '1m' });
    const cases: [Request, string][] = [
      [
        await signedRequest('{"amount":1}', { tamper: (h) => h.set('idempotency-key', 'k-2') }),
        'IDEMPO_SIGNATURE_INVALID',
      ],
      [
        await signedRequest('{"amount":1}', {
          tamper: (h) => h.set('content-digest', 'sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:'),
        }),
        'IDEMPO_SIGNATURE_INVALID',
      ],
      [await signedRequest('{}', { keyid: 'someone-else' }), 'IDEMPO_SIGNATURE_INVALID'],
      [await signedRequest('{}', { created: Math.floor(Date.now() / 1_000) - 120 }), 'IDEMPO_SIGNATURE_EXPIRED'],
    ];
    for (const [request, code] of cases) {
      const response = await handle(request);
      expect(response.status).toBe(401);
      expect(((await response.json()) as { code: string }).code).toBe(code);
    }
    expect(store.claims).toBe(0);
    expect(runs()).toBe(0);
  });

  it('lets an unsigned request through with required: false, and still refuses a bad signature', async () => {
    const { handle, runs } = setup({ required: false });
    const unsigned = new Request('http://api.test/p', {
      method: 'POST',
      headers: { 'idempotency-key': 'u' },
      body: '{}',
    });
    expect((await handle(unsigned)).status).toBe(201);
    const bad = await signedRequest('{}', { tamper: (h) => h.set('signature', 'idempo=:AAAA:') });
    expect((await handle(bad)).status).toBe(401);
    expect(runs()).toBe(1);
  });

  it('leaves requests without a key alone: idempo verifies what it would claim', async () => {
    const { handle, runs } = setup();
    expect((await handle(new Request('http://api.test/p', { method: 'POST', body: '{}' }))).status).toBe(201);
    expect(runs()).toBe(1);
  });

  it('looks keys up through a function', async () => {
    const seen: string[] = [];
    const { handle } = setup({
      keys: (keyid) => {
        seen.push(keyid);
        return keyid === 'client-1' ? { alg: 'hmac-sha256', key: secret } : undefined;
      },
    });
    expect((await handle(await signedRequest('{}'))).status).toBe(201);
    expect(seen).toEqual(['client-1']);
  });

  it('refuses a body a framework already parsed: its digest cannot be checked', async () => {
    const idem = createIdempotency({ store: createMemoryStore(), signatures: { keys } });
    const decision = await idem.begin({
      method: 'POST',
      url: '/p',
      header: (name) => (name === 'idempotency-key' ? 'k' : undefined),
      body: async () => ({ parsed: { amount: 1 } }),
    });
    expect(decision.action).toBe('respond');
    if (decision.action === 'respond') expect(decision.response.status).toBe(401);
  });

  it('checks its options at setup', () => {
    const store = createMemoryStore();
    expect(() => createIdempotency({ store, signatures: { keys: [] } })).toThrow(/signatures.keys/);
    expect(() =>
      createIdempotency({ store, signatures: { keys: [{ keyid: 'a', alg: 'rsa' as never, key: secret }] } }),
    ).toThrow(/expected 'hmac-sha256' or 'ed25519'/);
    expect(() => createIdempotency({ store, signatures: { keys, maxAge: 'soon' as never } })).toThrow();
  });
});
