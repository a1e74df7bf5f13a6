import { describe, expect, it } from 'vitest';
import { createIdempotency } from '../engine/engine.js';
import { createMemoryStore } from '../stores/memory.js';
import { createIdempotentFetch } from './idempotent-fetch.js';

// RFC 9421 B.1.4's Ed25519 test key, as JWKs.
const PUBLIC_JWK = { kty: 'OKP', crv: 'Ed25519', x: 'JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs' };
const PRIVATE_JWK = { ...PUBLIC_JWK, d: 'n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU' };

/** A server (the engine behind `handle`) that requires signatures; it fails the first `failures` runs with 503. */
function server(failures = 0) {
  const idem = createIdempotency({
    store: createMemoryStore(),
    signatures: { keys: [{ keyid: 'client-1', alg: 'ed25519', key: PUBLIC_JWK }] },
  });
  const seen: { status: number; signatureInput: string | null }[] = [];
  let runs = 0;
  const fetch = async (url: string, init: RequestInit) => {
    const request = new Request(url, init);
    const signatureInput = request.headers.get('signature-input');
    const response = await idem.handle(request, async () => {
      runs++;
      return runs <= failures ? new Response('busy', { status: 503 }) : Response.json({ runs }, { status: 201 });
    });
    seen.push({ status: response.status, signatureInput });
    return response;
  };
  return { fetch, seen, runs: () => runs };
}

describe('createIdempotentFetch with signing', () => {
  it('signs each attempt, and the engine accepts it', async () => {
    const s = server(1);
    const idempotentFetch = createIdempotentFetch({
      fetch: s.fetch,
      retry: { limit: 2, delay: () => 1_100, jitter: false },
      signing: { key: { keyid: 'client-1', alg: 'ed25519', key: PRIVATE_JWK } },
    });
    const response = await idempotentFetch('https://api.test/payments?x=1', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"amount":1}',
    });
    expect(response.status).toBe(201);
    expect(s.seen.map((a) => a.status)).toEqual([503, 201]);
    const [first, second] = s.seen.map((a) => a.signatureInput ?? '');
    expect(first).toMatch(
      /^idempo=\("@method" "@authority" "@path" "@query" "idempotency-key" "content-digest" "content-type"\);created=\d+;keyid="client-1";alg="ed25519"$/,
    );
    // A fresh created time per attempt.
    expect(second).not.toBe(first);
  });

  it('is refused by the engine without a signature', async () => {
    const s = server();
    const response = await createIdempotentFetch({ fetch: s.fetch })('https://api.test/p', {
      method: 'POST',
      body: '{}',
    });
    expect(response.status).toBe(401);
    expect(s.runs()).toBe(0);
  });

  it('refuses a malformed key at creation', () => {
    expect(() =>
      createIdempotentFetch({ signing: { key: { keyid: 'k', alg: 'rsa' as never, key: PRIVATE_JWK } } }),
    ).toThrow(/signing.key/);
  });
});
