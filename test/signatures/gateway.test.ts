/**
 * Signed requests through the gateway: keys from a file or the environment (never argv), the
 * client signing each attempt, unsigned and tampered requests refused 401 before the upstream
 * or the store sees them.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createIdempotentFetch } from '../../src/client/index.js';
import { type Gateway, startGateway } from '../../src/gateway/server.js';
import { signatureOptionsFrom } from '../../src/gateway/signature-keys.js';
import { startUpstream } from '../helpers/servers.js';

const PUBLIC_JWK = { kty: 'OKP', crv: 'Ed25519', x: 'JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs' };
const PRIVATE_JWK = { ...PUBLIC_JWK, d: 'n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU' };
const KEY_SET = JSON.stringify({ keys: [{ kid: 'client-1', ...PUBLIC_JWK }] });

describe('gateway signature keys', () => {
  const dir = mkdtempSync(join(tmpdir(), 'idempo-sig-'));
  const file = join(dir, 'keys.json');
  writeFileSync(file, KEY_SET);

  it('reads keys from a file or from IDEMPO_SIGNATURE_KEYS, and nowhere else', () => {
    expect(signatureOptionsFrom({ signatureKeys: file }, {})?.keys).toHaveLength(1);
    expect(signatureOptionsFrom({}, { IDEMPO_SIGNATURE_KEYS: KEY_SET })).toMatchObject({ required: true });
    expect(signatureOptionsFrom({}, {})).toBeUndefined();
    expect(
      signatureOptionsFrom({ signatureOptional: true, signatureMaxAge: '1m' }, { IDEMPO_SIGNATURE_KEYS: KEY_SET }),
    ).toMatchObject({ required: false, maxAge: '1m' });
  });

  it('refuses both sources at once, keys that are not a JWK Set, and key options without keys', () => {
    expect(() => signatureOptionsFrom({ signatureKeys: file }, { IDEMPO_SIGNATURE_KEYS: KEY_SET })).toThrow(
      /one place/,
    );
    expect(() => signatureOptionsFrom({}, { IDEMPO_SIGNATURE_KEYS: '{"keys":[]}' })).toThrow(/IDEMPO_SIGNATURE_KEYS/);
    expect(() => signatureOptionsFrom({ signatureKeys: join(dir, 'missing.json') }, {})).toThrow(/cannot read/);
    expect(() => signatureOptionsFrom({ signatureOptional: true }, {})).toThrow(/need keys/);
  });
});

describe('gateway with signatures', () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  let gateway: Gateway;
  beforeAll(async () => {
    upstream = await startUpstream((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}');
    });
    gateway = await startGateway({
      upstream: upstream.url,
      port: 0,
      store: 'memory:',
      logger: false,
      idempotency: { signatures: signatureOptionsFrom({}, { IDEMPO_SIGNATURE_KEYS: KEY_SET }) as never },
    });
  });
  afterAll(async () => {
    await gateway?.close();
    await upstream?.close();
  });

  it('forwards a signed request once and replays its retry', async () => {
    const idempotentFetch = createIdempotentFetch({
      signing: { key: { keyid: 'client-1', alg: 'ed25519', key: PRIVATE_JWK } },
    });
    const init = {
      method: 'POST',
      headers: { 'idempotency-key': 'sig-1', 'content-type': 'application/json' },
      body: '{"a":1}',
    };
    expect((await idempotentFetch(`${gateway.url}/orders`, init)).status).toBe(201);
    const retry = await idempotentFetch(`${gateway.url}/orders`, init);
    expect(retry.headers.get('idempotent-replayed')).toBe('true');
    expect(upstream.hits.filter((hit) => hit.url === '/orders')).toHaveLength(1);
  });

  it('answers an unsigned keyed request 401 and forwards nothing', async () => {
    const response = await fetch(`${gateway.url}/unsigned`, {
      method: 'POST',
      headers: { 'idempotency-key': 'sig-2' },
      body: '{}',
    });
    expect(response.status).toBe(401);
    expect(((await response.json()) as { code: string }).code).toBe('IDEMPO_SIGNATURE_MISSING');
    expect(upstream.hits.filter((hit) => hit.url === '/unsigned')).toHaveLength(0);
  });
});
