import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { IdempotencyRecordUnreadableError, type IdempotencyStore, type StoredResponse } from '../vocabulary/index.js';
import { storeContractCases } from './contract.js';
import { type EncryptionOptions, encryptStore, parseEncryptionKeys } from './encrypted.js';
import { createMemoryStore } from './memory.js';
import { createSqliteStore } from './sqlite.js';

const k1 = randomBytes(32).toString('base64');
const k2 = randomBytes(32).toString('base64');
const fp = randomBytes(32).toString('base64');
const KEYS: EncryptionOptions = { keys: { k1 }, currentKeyId: 'k1', fingerprintKey: fp };
const DAY = 86_400_000;

const dir = mkdtempSync(join(tmpdir(), 'idempo-encrypted-'));
const closers: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const close of closers) await close();
  rmSync(dir, { recursive: true, force: true });
});

function sqlite(name: string) {
  const path = join(dir, `${name}.db`);
  const store = createSqliteStore({ path, sweepInterval: false });
  closers.push(() => store.close());
  return { path, store };
}

const Driver = createRequire(import.meta.url)('better-sqlite3') as new (
  path: string,
) => { prepare(sql: string): { run(...a: unknown[]): unknown; get(...a: unknown[]): unknown }; close(): void };

function response(text: string, status = 201): StoredResponse {
  return { status, headers: [['content-type', 'application/json']], body: new TextEncoder().encode(text) };
}

async function completed(store: IdempotencyStore, key: string, text: string, fingerprint = 'fp') {
  const claim = await store.claim({ key, fingerprint, leaseMs: 60_000, ttlMs: DAY });
  if (claim.status !== 'acquired') throw new Error(`expected acquired, got ${claim.status}`);
  expect(await store.complete(key, claim.token, response(text), DAY)).toBe('ok');
}

async function replayed(store: IdempotencyStore, key: string, fingerprint = 'fp'): Promise<string> {
  const claim = await store.claim({ key, fingerprint, leaseMs: 60_000, ttlMs: DAY });
  if (claim.status !== 'replay') throw new Error(`expected replay, got ${claim.status}`);
  expect(claim.response.status).toBe(201);
  expect(claim.response.headers).toEqual([['content-type', 'application/json']]);
  return new TextDecoder().decode(claim.response.body);
}

describe('encrypted store: shared contract over memory', () => {
  const store = encryptStore(createMemoryStore(), KEYS);
  closers.push(async () => store.close?.());
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => store }));
});

describe('encrypted store: shared contract over memory, through its synchronous operations', () => {
  const store = encryptStore(createMemoryStore(), KEYS);
  closers.push(async () => store.close?.());
  const sync = store.sync;
  if (sync === undefined) throw new Error('the wrapper offers no synchronous operations over memory');
  const viaSync: IdempotencyStore = {
    ...store,
    claim: async (input) => sync.claim(input),
    complete: async (key, token, r, ttlMs) => sync.complete(key, token, r, ttlMs),
  };
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => viaSync }));

  it('names the wrapper as their store, never exposing the inner store’s', () => {
    expect(sync.store).toBe(store);
    expect({ ...store }.sync).toBeUndefined();
  });
});

describe('encrypted store: shared contract over SQLite', () => {
  const { path, store: inner } = sqlite('contract');
  const other = createSqliteStore({ path, sweepInterval: false });
  closers.push(() => other.close());
  const store = encryptStore(inner, KEYS);
  const otherStore = encryptStore(other, KEYS);
  for (const c of storeContractCases) it(c.name, () => c.run({ store: () => store, otherStore: () => otherStore }));

  it('offers no synchronous operations over a store that has none', () => {
    expect(store.sync).toBeUndefined();
  });
});

describe('encrypted store: what the wrapped store keeps', () => {
  it('a SQLite dump holds neither the body, the headers, the status, a step nor the plain fingerprint', async () => {
    const { path, store: inner } = sqlite('dump');
    const store = encryptStore(inner, KEYS);
    const fingerprint = 'a1b2c3d4e5f6-plain-fingerprint';
    const claim = await store.claim({ key: 'k', fingerprint, leaseMs: 60_000, ttlMs: DAY });
    if (claim.status !== 'acquired') throw new Error('expected acquired');
    expect(await store.saveStep('k', claim.token, 'charge', '{"card":"4242-secret-step"}')).toBe('ok');
    const other = await store.claim({ key: 'k2', fingerprint, leaseMs: 60_000, ttlMs: DAY });
    if (other.status !== 'acquired') throw new Error('expected acquired');
    await store.complete(
      'k2',
      other.token,
      { status: 402, headers: [['x-secret-header', 'hdr-value']], body: Buffer.from('{"iban":"DE89-secret-body"}') },
      DAY,
    );
    const dump = readFileSync(path).toString('latin1') + readWal(path);
    for (const secret of ['4242-secret-step', 'DE89-secret-body', 'x-secret-header', 'hdr-value', fingerprint]) {
      expect(dump).not.toContain(secret);
    }
    const row = new Driver(path).prepare('SELECT status, fingerprint FROM idempo_records WHERE key = ?').get('k2') as {
      status: number;
      fingerprint: string;
    };
    expect(row.status).toBe(0);
    expect(row.fingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(await replayedStatus(store, 'k2', fingerprint)).toBe(402);
  });

  it('the same fingerprint keys to the same HMAC, so a reused key with another request is still a mismatch', async () => {
    const store = encryptStore(createMemoryStore(), KEYS);
    await completed(store, 'k', 'one', 'fp-a');
    expect((await store.claim({ key: 'k', fingerprint: 'fp-b', leaseMs: 60_000, ttlMs: DAY })).status).toBe('mismatch');
    expect(await replayed(store, 'k', 'fp-a')).toBe('one');
    // Another wrapper with the same fingerprint key over the same records matches too.
    const again = encryptStore(createMemoryStore(), { ...KEYS, keys: { k1, k2 }, currentKeyId: 'k2' });
    await completed(again, 'k', 'two', 'fp-a');
  });
});

function inspect(store: IdempotencyStore, key: string) {
  return (store.inspect as NonNullable<IdempotencyStore['inspect']>).call(store, key);
}

function readWal(path: string): string {
  try {
    return readFileSync(`${path}-wal`).toString('latin1');
  } catch {
    return '';
  }
}

async function replayedStatus(store: IdempotencyStore, key: string, fingerprint: string): Promise<number> {
  const claim = await store.claim({ key, fingerprint, leaseMs: 60_000, ttlMs: DAY });
  if (claim.status !== 'replay') throw new Error(`expected replay, got ${claim.status}`);
  return claim.response.status;
}

describe('encrypted store: a record that fails authentication is an error, never a replay', () => {
  it('a flipped byte of a stored ciphertext in SQLite', async () => {
    const { path, store: inner } = sqlite('flip');
    const store = encryptStore(inner, KEYS);
    await completed(store, 'k', '{"ok":true}');
    const db = new Driver(path);
    const { body } = db.prepare('SELECT body FROM idempo_records WHERE key = ?').get('k') as { body: Buffer };
    for (const at of [1, 10, body.length - 20, body.length - 1]) {
      const altered = Buffer.from(body);
      altered[at] = (altered[at] as number) ^ 0x01;
      db.prepare('UPDATE idempo_records SET body = ? WHERE key = ?').run(altered, 'k');
      await expect(store.claim({ key: 'k', fingerprint: 'fp', leaseMs: 1, ttlMs: DAY })).rejects.toBeInstanceOf(
        IdempotencyRecordUnreadableError,
      );
      await expect(store.inspect?.('k')).rejects.toMatchObject({ code: 'IDEMPO_RECORD_UNREADABLE' });
    }
    db.prepare('UPDATE idempo_records SET body = ? WHERE key = ?').run(body, 'k');
    db.close();
    expect(await replayed(store, 'k')).toBe('{"ok":true}');
  });

  it('two records’ bodies swapped', async () => {
    const { path, store: inner } = sqlite('swap');
    const store = encryptStore(inner, KEYS);
    await completed(store, 'a', '{"to":"alice"}');
    await completed(store, 'b', '{"to":"bob"}');
    const db = new Driver(path);
    const bodyOf = (key: string) =>
      (db.prepare('SELECT body FROM idempo_records WHERE key = ?').get(key) as { body: Buffer }).body;
    const [a, b] = [bodyOf('a'), bodyOf('b')];
    db.prepare('UPDATE idempo_records SET body = ? WHERE key = ?').run(b, 'a');
    db.prepare('UPDATE idempo_records SET body = ? WHERE key = ?').run(a, 'b');
    db.close();
    for (const key of ['a', 'b']) {
      await expect(store.claim({ key, fingerprint: 'fp', leaseMs: 1, ttlMs: DAY })).rejects.toBeInstanceOf(
        IdempotencyRecordUnreadableError,
      );
    }
  });

  it('a step moved to another name, or altered', async () => {
    const { path, store: inner } = sqlite('steps');
    const store = encryptStore(inner, KEYS);
    const first = await store.claim({ key: 'k', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (first.status !== 'acquired') throw new Error('expected acquired');
    await store.saveStep('k', first.token, 'charge', '"ch_1"');
    await store.saveStep('k', first.token, 'refund', '"re_1"');
    await store.release('k', first.token, DAY);
    const db = new Driver(path);
    const { steps } = db.prepare('SELECT steps FROM idempo_records WHERE key = ?').get('k') as { steps: string };
    const parsed = JSON.parse(steps) as Record<string, string>;
    db.prepare('UPDATE idempo_records SET steps = ? WHERE key = ?').run(
      JSON.stringify({ charge: parsed.refund, refund: parsed.charge }),
      'k',
    );
    await expect(store.claim({ key: 'k', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })).rejects.toBeInstanceOf(
      IdempotencyRecordUnreadableError,
    );
    db.prepare('UPDATE idempo_records SET steps = ? WHERE key = ?').run(steps, 'k');
    db.close();
    const again = await store.claim({ key: 'k', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    expect(again.status === 'acquired' && again.steps).toEqual({ charge: '"ch_1"', refund: '"re_1"' });
  });

  it('a record written before encryption was on: its plain fingerprint no longer matches, its body is refused', async () => {
    const inner = createMemoryStore();
    await completed(inner, 'k', 'plain');
    const store = encryptStore(inner, KEYS);
    expect((await store.claim({ key: 'k', fingerprint: 'fp', leaseMs: 1, ttlMs: DAY })).status).toBe('mismatch');
    await expect(store.inspect?.('k')).rejects.toBeInstanceOf(IdempotencyRecordUnreadableError);
  });
});

describe('encrypted store: key rotation', () => {
  it('records under key 1 replay after key 2 becomes current; re-encryption moves them; without key 1 they still replay', async () => {
    const { store: inner } = sqlite('rotation');
    const v1 = encryptStore(inner, { keys: { k1 }, currentKeyId: 'k1', fingerprintKey: fp });
    for (let i = 0; i < 5; i++) await completed(v1, `old-${i}`, `{"n":${i}}`);
    const running = await v1.claim({ key: 'running', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY });
    if (running.status !== 'acquired') throw new Error('expected acquired');
    await v1.saveStep('running', running.token, 's', '1');

    const v2 = encryptStore(inner, { keys: { k1, k2 }, currentKeyId: 'k2', fingerprintKey: fp });
    expect(await replayed(v2, 'old-0')).toBe('{"n":0}');
    await completed(v2, 'new', '{"new":true}');
    expect(v2.keyIdOf((await inspect(inner, 'new'))?.response as StoredResponse)).toBe('k2');
    expect(v2.keyIdOf((await inspect(inner, 'old-1'))?.response as StoredResponse)).toBe('k1');

    const progress: number[] = [];
    const report = await v2.reencrypt({ pageSize: 2, onProgress: (r) => progress.push(r.examined) });
    expect(report).toMatchObject({ examined: 7, moved: 5, current: 1, changed: 0, unreadable: [], withSteps: 1 });
    expect(report.byKeyId).toEqual({ k2: 6 });
    expect(progress.length).toBeGreaterThan(1);
    expect(v2.keyIdOf((await inspect(inner, 'old-1'))?.response as StoredResponse)).toBe('k2');
    // A second run has nothing to move.
    expect(await v2.reencrypt()).toMatchObject({ moved: 0, current: 6 });

    const v3 = encryptStore(inner, { keys: { k2 }, currentKeyId: 'k2', fingerprintKey: fp });
    for (let i = 0; i < 5; i++) expect(await replayed(v3, `old-${i}`)).toBe(`{"n":${i}}`);
    // The running record's step was sealed with key 1 and could not be moved: it is an error, not a guess.
    await v3.release('running', running.token, DAY);
    await expect(v3.claim({ key: 'running', fingerprint: 'fp', leaseMs: 60_000, ttlMs: DAY })).rejects.toThrow(
      /key "k1", which the key set does not hold/,
    );
  });

  it('re-encryption leaves a record alone that completed again meanwhile, and reports unreadable ones', async () => {
    const inner = createMemoryStore();
    const v1 = encryptStore(inner, KEYS);
    await completed(v1, 'a', 'A');
    await completed(v1, 'b', 'B');
    const sealedA = (await inspect(inner, 'a'))?.response as StoredResponse;
    // Tamper with b, and make a's body change under the re-encryption's feet.
    const sealedB = (await inspect(inner, 'b'))?.response as StoredResponse;
    sealedB.body[20] = (sealedB.body[20] as number) ^ 1;
    const v2 = encryptStore(inner, { keys: { k1, k2 }, currentKeyId: 'k2', fingerprintKey: fp });
    const rewrite = (inner.rewriteResponse as NonNullable<IdempotencyStore['rewriteResponse']>).bind(inner);
    inner.rewriteResponse = async (key, expected, replacement) => {
      if (key === 'a') await rewrite('a', sealedA.body, { ...sealedA, body: Buffer.from(sealedA.body).reverse() });
      return rewrite(key, expected, replacement);
    };
    const report = await v2.reencrypt();
    expect(report).toMatchObject({ moved: 0, changed: 1, unreadable: ['b'] });
  });

  it('previous fingerprint keys still match records made before the fingerprint key changed', async () => {
    const inner = createMemoryStore();
    await completed(encryptStore(inner, KEYS), 'k', 'kept');
    const fp2 = randomBytes(32);
    const changed = encryptStore(inner, { ...KEYS, fingerprintKey: fp2 });
    expect((await changed.claim({ key: 'k', fingerprint: 'fp', leaseMs: 1, ttlMs: DAY })).status).toBe('mismatch');
    const withPrevious = encryptStore(inner, { ...KEYS, fingerprintKey: fp2, previousFingerprintKeys: [fp] });
    expect(await replayed(withPrevious, 'k')).toBe('kept');
    expect((await withPrevious.claim({ key: 'k', fingerprint: 'x', leaseMs: 1, ttlMs: DAY })).status).toBe('mismatch');
    // The synchronous path does the same.
    const sync = withPrevious.sync;
    expect(sync?.claim({ key: 'k', fingerprint: 'fp', leaseMs: 1, ttlMs: DAY }).status).toBe('replay');
  });
});

describe('encrypted store: configuration', () => {
  it('refuses short keys, an unknown current key, and a fingerprint key equal to an encryption key, with coded errors', () => {
    const inner = createMemoryStore();
    for (const options of [
      { ...KEYS, keys: { k1: randomBytes(16) } },
      { ...KEYS, currentKeyId: 'k9' },
      { ...KEYS, fingerprintKey: randomBytes(8) },
      { ...KEYS, fingerprintKey: k1 },
      { ...KEYS, keys: { '': k1 }, currentKeyId: '' },
    ]) {
      expect(() => encryptStore(inner, options)).toThrow(expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID' }));
    }
  });

  it('parses a key set file, and names what is wrong without echoing a key', () => {
    const text = JSON.stringify({ current: 'k2', keys: { k1, k2 }, fingerprintKey: fp });
    expect(parseEncryptionKeys(text)).toEqual({ keys: { k1, k2 }, currentKeyId: 'k2', fingerprintKey: fp });
    for (const bad of ['nope', '{}', JSON.stringify({ current: 'k1', keys: { k1: 5 }, fingerprintKey: fp })]) {
      let message = '';
      try {
        parseEncryptionKeys(bad);
      } catch (error) {
        message = (error as Error).message;
        expect(error).toMatchObject({ code: 'IDEMPO_CONFIG_INVALID' });
      }
      expect(message).not.toBe('');
      expect(message).not.toContain(fp);
    }
  });
});
