import { describe, expect, it } from 'vitest';
import {
  IdempotencySignatureExpiredError,
  IdempotencySignatureInvalidError,
  IdempotencySignatureMissingError,
} from '../vocabulary/index.js';
import { type NamedSignatureKey, parseKeySet, type SignatureKey } from './keys.js';
import { signRequest } from './sign.js';
import { type SignedRequestView, signatureBase } from './signature-base.js';
import { parseDictionary, serializeDictionary, Token } from './structured-fields.js';
import { type VerifyPolicy, verifyRequest } from './verify.js';

// RFC 9421 Appendix B: the test request, the shared secret of B.1.5 and the Ed25519 key of B.1.4
// (values only, as the RFC prints them).
const SHARED_SECRET = 'uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==';
const ED25519_PUBLIC_JWK = { kty: 'OKP', crv: 'Ed25519', x: 'JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs' };
const ED25519_PRIVATE_JWK = { ...ED25519_PUBLIC_JWK, d: 'n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU' };
const CREATED = 1618884473;

const fromBase64 = (text: string) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
const hmacKey = { alg: 'hmac-sha256' as const, key: fromBase64(SHARED_SECRET) };
const ed25519Key = { alg: 'ed25519' as const, key: ED25519_PUBLIC_JWK };

/** The RFC's test-request: POST /foo?param=Value&Pet=dog to example.com, `{"hello": "world"}`. */
function testRequest(extra: Record<string, string>): SignedRequestView {
  const headers: Record<string, string> = {
    host: 'example.com',
    date: 'Tue, 20 Apr 2021 02:07:55 GMT',
    'content-type': 'application/json',
    'content-digest':
      'sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:',
    'content-length': '18',
    ...extra,
  };
  return {
    method: 'POST',
    scheme: 'https',
    authority: 'example.com',
    target: '/foo?param=Value&Pet=dog',
    header: (n) => headers[n],
  };
}
const BODY = new TextEncoder().encode('{"hello": "world"}');

/** A policy that accepts what the RFC's examples cover (they cover no Idempotency-Key). */
function rfcPolicy(lookup: VerifyPolicy['lookup']): VerifyPolicy {
  return { lookup, required: true, maxAgeSeconds: 300, clockSkewSeconds: 30, keyHeader: 'idempotency-key' };
}

describe('RFC 9421 Appendix B test vectors', () => {
  it('B.2.5: the hmac-sha256 signature base, and its signature verifies', async () => {
    const input = '("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"';
    const covered = parseDictionary(`sig-b25=${input}`).get('sig-b25');
    const base = new TextDecoder().decode(signatureBase(testRequest({}), covered as never));
    expect(base).toBe(
      '"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@authority": example.com\n"content-type": application/json\n' +
        `"@signature-params": ${input}`,
    );
    const { verifyBytes } = await import('./keys.js');
    expect(
      await verifyBytes(
        hmacKey,
        new TextEncoder().encode(base),
        fromBase64('pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8='),
      ),
    ).toBe(true);
  });

  it('B.2.6: the ed25519 signature base, and its signature verifies', async () => {
    const input =
      '("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"';
    const covered = parseDictionary(`sig-b26=${input}`).get('sig-b26');
    const base = signatureBase(testRequest({}), covered as never);
    expect(new TextDecoder().decode(base)).toBe(
      '"date": Tue, 20 Apr 2021 02:07:55 GMT\n"@method": POST\n"@path": /foo\n"@authority": example.com\n' +
        `"content-type": application/json\n"content-length": 18\n"@signature-params": ${input}`,
    );
    const { verifyBytes } = await import('./keys.js');
    const signature = fromBase64(
      'wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==',
    );
    expect(await verifyBytes(ed25519Key, base, signature)).toBe(true);
    expect(
      await verifyBytes(
        ed25519Key,
        base,
        signature.map((b, i) => (i === 0 ? b ^ 1 : b)),
      ),
    ).toBe(false);
  });

  it('B.2.6: the ed25519 signature is reproduced from the private key (Ed25519 is deterministic)', async () => {
    const { signBytes } = await import('./keys.js');
    const input =
      '("date" "@method" "@path" "@authority" "content-type" "content-length");created=1618884473;keyid="test-key-ed25519"';
    const covered = parseDictionary(`sig-b26=${input}`).get('sig-b26');
    const signature = await signBytes(
      { alg: 'ed25519', key: ED25519_PRIVATE_JWK },
      signatureBase(testRequest({}), covered as never),
    );
    expect(btoa(String.fromCharCode(...signature))).toBe(
      'wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==',
    );
  });

  it('B.2.5 end to end: verifyRequest accepts it when the policy asks no more than it covers', async () => {
    const request = testRequest({
      'signature-input': 'sig-b25=("date" "@authority" "content-type");created=1618884473;keyid="test-shared-secret"',
      signature: 'sig-b25=:pxcQw6G3AjtMBQjwo8XzkZf/bws5LelbaMk5rGIGtE8=:',
    });
    // The RFC's example covers neither the method nor a key: idempo's policy refuses it as such.
    await expect(
      verifyRequest(
        request,
        BODY,
        rfcPolicy(() => hmacKey),
        CREATED + 1,
      ),
    ).rejects.toThrow(/does not cover @method/);
  });
});

describe('RFC 9530 Content-Digest', () => {
  it('is the sha-256 and sha-512 of the content, as in the RFC examples', async () => {
    const { digest } = await import('./keys.js');
    const b64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes));
    expect(b64(await digest('SHA-256', BODY))).toBe('X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=');
    expect(b64(await digest('SHA-512', BODY))).toBe(
      'WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==',
    );
  });
});

describe('structured fields', () => {
  it('round-trips a Signature-Input dictionary', () => {
    const text = 'a=("@method" "content-digest");created=1;keyid="k \\"1\\"";alg="ed25519", b=:AAE=:, c, d=tok;x=?0';
    const parsed = parseDictionary(text);
    expect(serializeDictionary(parsed)).toBe(text);
    expect((parsed.get('d') as { value: unknown }).value).toEqual(new Token('tok'));
  });

  it.each(['a=', 'a=(1', 'a="x', 'a=:%%:', 'A=1', 'a=1,', 'a=1 b=2', 'a=?2', 'a="\\x"', 'a=1234567890123456'])(
    'refuses %s',
    (text) => {
      expect(() => parseDictionary(text)).toThrow();
    },
  );
});

/** A request signed by idempo's signer, as the engine sees it, with one header changed after signing. */
async function signed(
  key: NamedSignatureKey,
  options: { body?: string; components?: string[]; created?: number; tamper?: (h: Headers) => void; url?: string } = {},
) {
  const headers = new Headers({ 'idempotency-key': 'key-1', 'content-type': 'application/json', host: 'api.test' });
  const body = options.body === undefined ? undefined : new TextEncoder().encode(options.body);
  const url = options.url ?? 'https://api.test/payments?currency=eur';
  await signRequest({ method: 'POST', url, headers, body }, key, {
    ...(options.components ? { components: options.components } : {}),
    ...(options.created !== undefined ? { created: options.created } : {}),
  });
  options.tamper?.(headers);
  const view: SignedRequestView = {
    method: 'POST',
    scheme: 'https',
    authority: headers.get('host') ?? undefined,
    target: '/payments?currency=eur',
    header: (name) => headers.get(name) ?? undefined,
  };
  return { view, body: body ?? null };
}

describe('signRequest and verifyRequest', () => {
  const client = { keyid: 'client-1', alg: 'ed25519' as const, key: ED25519_PRIVATE_JWK };
  const server = new Map<string, SignatureKey>([
    ['client-1', ed25519Key],
    ['shared', hmacKey],
  ]);
  const policy: VerifyPolicy = rfcPolicy((id) => server.get(id));
  const now = () => Date.now() / 1_000;

  it('accepts what it signed, with Ed25519 and with HMAC-SHA256', async () => {
    const a = await signed(client, { body: '{"amount":1}' });
    expect(await verifyRequest(a.view, a.body, policy)).toEqual({ keyid: 'client-1', label: 'idempo' });
    const b = await signed({ keyid: 'shared', ...hmacKey }, { body: '{"amount":1}' });
    expect(await verifyRequest(b.view, b.body, policy)).toEqual({ keyid: 'shared', label: 'idempo' });
  });

  it('refuses a key moved to another request, a changed body, method coverage left out', async () => {
    const moved = await signed(client, { body: '{"amount":1}', tamper: (h) => h.set('idempotency-key', 'key-2') });
    await expect(verifyRequest(moved.view, moved.body, policy)).rejects.toBeInstanceOf(
      IdempotencySignatureInvalidError,
    );
    const body = await signed(client, { body: '{"amount":1}' });
    await expect(verifyRequest(body.view, new TextEncoder().encode('{"amount":2}'), policy)).rejects.toThrow(
      /Content-Digest sha-256 does not match/,
    );
    const partial = await signed(client, {
      body: '{}',
      components: ['@authority', '@path', '@query', 'idempotency-key', 'content-digest'],
    });
    await expect(verifyRequest(partial.view, partial.body, policy)).rejects.toThrow(/does not cover @method/);
    const noDigest = await signed(client, {
      body: '{}',
      components: ['@method', '@authority', '@path', '@query', 'idempotency-key'],
    });
    await expect(verifyRequest(noDigest.view, noDigest.body, policy)).rejects.toThrow(/content-digest/);
    const otherHost = await signed(client, { body: '{}', tamper: (h) => h.set('host', 'evil.test') });
    await expect(verifyRequest(otherHost.view, otherHost.body, policy)).rejects.toThrow(/does not match the request/);
  });

  it('refuses an unknown keyid, a wrong alg, and a signature by another key', async () => {
    const unknown = await signed({ ...client, keyid: 'nobody' }, {});
    await expect(verifyRequest(unknown.view, null, policy)).rejects.toThrow(/keyid this API does not know/);
    const wrongKey = await signed({ keyid: 'shared', alg: 'hmac-sha256', key: new Uint8Array(32) }, {});
    await expect(verifyRequest(wrongKey.view, null, policy)).rejects.toThrow(/does not match the request/);
    const wrongAlg = await signed({ keyid: 'client-1', ...hmacKey }, {});
    await expect(verifyRequest(wrongAlg.view, null, policy)).rejects.toThrow(/alg=hmac-sha256/);
  });

  it('refuses a signature older than maxAge or created in the future, and one past expires', async () => {
    const old = await signed(client, { created: Math.floor(now()) - 301 });
    await expect(verifyRequest(old.view, null, policy)).rejects.toBeInstanceOf(IdempotencySignatureExpiredError);
    const ahead = await signed(client, { created: Math.floor(now()) + 60 });
    await expect(verifyRequest(ahead.view, null, policy)).rejects.toBeInstanceOf(IdempotencySignatureExpiredError);
    const headers = new Headers({ 'idempotency-key': 'k', host: 'api.test' });
    await signRequest({ method: 'POST', url: 'https://api.test/p', headers, body: undefined }, client, {
      created: Math.floor(now()) - 10,
      expiresIn: 5,
    });
    const view = {
      method: 'POST',
      scheme: 'https',
      authority: 'api.test',
      target: '/p',
      header: (n: string) => headers.get(n) ?? undefined,
    };
    await expect(verifyRequest(view, null, policy)).rejects.toThrow(/expired at/);
  });

  it('answers an unsigned request by whether signatures are required', async () => {
    const view = { method: 'POST', scheme: 'https', authority: 'api.test', target: '/p', header: () => undefined };
    await expect(verifyRequest(view, null, policy)).rejects.toBeInstanceOf(IdempotencySignatureMissingError);
    expect(await verifyRequest(view, null, { ...policy, required: false })).toBeUndefined();
  });

  it('refuses malformed fields as invalid, never with another error', async () => {
    for (const [input, signature] of [
      ['idempo=("@method"', 'idempo=:AA==:'],
      ['idempo=("@method");created=1', ''],
      ['idempo=1', 'idempo=:AA==:'],
      ['idempo=("@method");created=1', 'idempo=("x")'],
    ] as const) {
      const headers: Record<string, string> = { 'signature-input': input, signature };
      const view = { method: 'POST', scheme: 'https', authority: 'a', target: '/', header: (n: string) => headers[n] };
      await expect(verifyRequest(view, null, policy)).rejects.toBeInstanceOf(IdempotencySignatureInvalidError);
    }
  });
});

describe('parseKeySet', () => {
  it('reads a JWK Set into named keys, typed by kty', () => {
    const keys = parseKeySet(
      JSON.stringify({
        keys: [
          { kid: 'a', kty: 'oct', k: 'c2VjcmV0' },
          { kid: 'b', ...ED25519_PUBLIC_JWK },
        ],
      }),
    );
    expect(keys.map((k) => [k.keyid, k.alg])).toEqual([
      ['a', 'hmac-sha256'],
      ['b', 'ed25519'],
    ]);
  });

  it.each(['not json', '{}', '{"keys":[{"kty":"oct","k":"x"}]}', '{"keys":[{"kid":"a","kty":"RSA"}]}'])(
    'refuses %s with a coded error',
    (text) => {
      expect(() => parseKeySet(text)).toThrow(/signature keys/);
    },
  );
});
