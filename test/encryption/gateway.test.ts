/**
 * Encryption at rest through the gateway: keys from a file or the environment (never argv), a
 * SQLite file that holds no body in plain text, a tampered record answered 503 with nothing run,
 * and a key rotation carried through `idempo keys reencrypt`.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encryptionOptionsFrom } from '../../src/gateway/encryption-keys.js';
import { keysCommand } from '../../src/gateway/keys-command.js';
import { startGateway } from '../../src/gateway/server.js';
import { spawnGateway, startUpstream } from '../helpers/servers.js';

const dir = mkdtempSync(join(tmpdir(), 'idempo-encryption-gw-'));
const k1 = randomBytes(32).toString('base64');
const k2 = randomBytes(32).toString('base64');
const fingerprintKey = randomBytes(32).toString('base64');

function keyFile(name: string, current: string, keys: Record<string, string>): string {
  const path = join(dir, name);
  writeFileSync(path, JSON.stringify({ current, keys, fingerprintKey }));
  return path;
}
const V1 = keyFile('v1.json', 'k1', { k1 });
const V2 = keyFile('v2.json', 'k2', { k1, k2 });
const V3 = keyFile('v3.json', 'k2', { k2 });

let upstream: Awaited<ReturnType<typeof startUpstream>>;
beforeAll(async () => {
  upstream = await startUpstream((req, res) => {
    res
      .writeHead(201, { 'content-type': 'application/json' })
      .end(JSON.stringify({ secret: `card-4242-${req.url}`, n: upstream.hits.length }));
  });
});
afterAll(async () => {
  await upstream?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function withGateway<T>(db: string, keys: string, run: (url: string) => Promise<T>): Promise<T> {
  const encryption = encryptionOptionsFrom(keys, {});
  const gateway = await startGateway({
    upstream: upstream.url,
    port: 0,
    store: `sqlite:${db}`,
    logger: false,
    ...(encryption === undefined ? {} : { encryption }),
  });
  try {
    return await run(gateway.url);
  } finally {
    await gateway.close();
  }
}

function post(url: string, key: string) {
  return fetch(url, {
    method: 'POST',
    headers: { 'idempotency-key': key, 'content-type': 'application/json' },
    body: '{"amount":1}',
  });
}

async function keys(...args: string[]): Promise<string[]> {
  const lines: string[] = [];
  await keysCommand((line) => lines.push(line)).parseAsync(args, { from: 'user' });
  return lines;
}

describe('gateway encryption keys', () => {
  it('reads the key set from a file or from IDEMPO_ENCRYPTION_KEYS, and nowhere else', () => {
    expect(encryptionOptionsFrom(V2, {})).toMatchObject({ currentKeyId: 'k2' });
    expect(encryptionOptionsFrom(undefined, { IDEMPO_ENCRYPTION_KEYS: readFileSync(V1, 'utf8') })).toMatchObject({
      currentKeyId: 'k1',
    });
    expect(encryptionOptionsFrom(undefined, {})).toBeUndefined();
  });

  it('refuses both sources at once, an unreadable file and a malformed set, without echoing keys', () => {
    expect(() => encryptionOptionsFrom(V1, { IDEMPO_ENCRYPTION_KEYS: '{}' })).toThrow(/one place/);
    expect(() => encryptionOptionsFrom(join(dir, 'missing.json'), {})).toThrow(/cannot read/);
    expect(() => encryptionOptionsFrom(undefined, { IDEMPO_ENCRYPTION_KEYS: `{"keys":"${k1}"}` })).toThrow(
      expect.objectContaining({ code: 'IDEMPO_CONFIG_INVALID', message: expect.not.stringContaining(k1) }),
    );
  });
});

describe('idempo serve with encryption at rest', () => {
  it('takes the key set file from IDEMPO_ENCRYPTION_KEYS_FILE and seals what it stores', async () => {
    const db = join(dir, 'cli.db');
    const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', `sqlite:${db}`], {
      IDEMPO_ENCRYPTION_KEYS_FILE: V1,
    });
    try {
      expect((await post(`${gateway.url}/cli`, 'cli-1')).status).toBe(201);
      const retry = await post(`${gateway.url}/cli`, 'cli-1');
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(await retry.text()).toContain('card-4242-/cli');
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }
    const raw = new (createRequire(import.meta.url)('better-sqlite3'))(db);
    const rows = raw.prepare('SELECT status, body FROM idempo_records').all() as { status: number; body: Buffer }[];
    raw.close();
    expect(rows).toHaveLength(1);
    expect(rows[0]?.status).toBe(0);
    expect(rows[0]?.body.toString('latin1')).not.toContain('card-4242');
  });
});

describe('gateway with encryption at rest', () => {
  it('replays from a SQLite file that holds no body in plain text; a tampered record gets 503 and runs nothing', async () => {
    const db = join(dir, 'tamper.db');
    await withGateway(db, V1, async (url) => {
      const first = await post(`${url}/pay`, 'enc-1');
      expect(first.status).toBe(201);
      const body = await first.text();
      const retry = await post(`${url}/pay`, 'enc-1');
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(await retry.text()).toBe(body);
      expect(upstream.hits.filter((h) => h.url === '/pay')).toHaveLength(1);

      const Driver = createRequire(import.meta.url)('better-sqlite3');
      const raw = new Driver(db);
      const dump = raw.prepare('SELECT * FROM idempo_records').all();
      expect(JSON.stringify(dump)).not.toContain('card-4242');
      const row = raw.prepare('SELECT key, body FROM idempo_records').get() as { key: string; body: Buffer };
      row.body[row.body.length - 3] = (row.body[row.body.length - 3] as number) ^ 0x80;
      raw.prepare('UPDATE idempo_records SET body = ? WHERE key = ?').run(row.body, row.key);
      raw.close();

      const tampered = await post(`${url}/pay`, 'enc-1');
      expect(tampered.status).toBe(503);
      expect(((await tampered.json()) as { code: string }).code).toBe('IDEMPO_STORE_UNAVAILABLE');
      expect(tampered.headers.get('idempotent-replayed')).toBeNull();
      expect(upstream.hits.filter((h) => h.url === '/pay')).toHaveLength(1);
    });
  });

  it('rotates keys: records under key 1 replay under key 2, `keys reencrypt` moves them, and they replay without key 1', async () => {
    const db = join(dir, 'rotate.db');
    const store = `sqlite:${db}`;
    const bodies = new Map<string, string>();
    await withGateway(db, V1, async (url) => {
      for (const key of ['r-1', 'r-2', 'r-3']) bodies.set(key, await (await post(`${url}/rot`, key)).text());
    });
    await withGateway(db, V2, async (url) => {
      const replay = await post(`${url}/rot`, 'r-1');
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe(bodies.get('r-1'));
    });

    const report = JSON.parse((await keys('reencrypt', '--store', store, '--encryption-keys', V2, '--json'))[0] ?? '');
    expect(report).toMatchObject({ examined: 3, moved: 3, current: 0, changed: 0, unreadable: [] });
    expect(report.byKeyId).toEqual({ k2: 3 });
    const text = await keys('reencrypt', '--store', store, '--encryption-keys', V2);
    expect(text[0]).toBe(
      '3 records examined: 0 moved to key "k2", 3 already under it, 0 changed meanwhile (left alone).',
    );

    const hitsBefore = upstream.hits.length;
    await withGateway(db, V3, async (url) => {
      for (const [key, body] of bodies) {
        const replay = await post(`${url}/rot`, key);
        expect(replay.headers.get('idempotent-replayed')).toBe('true');
        expect(await replay.text()).toBe(body);
      }
    });
    expect(upstream.hits.length).toBe(hitsBefore);

    // `keys show` opens a sealed record with the key set, and shows sealed bytes without it.
    const shown = await keys('show', 'r-2', '--store', store, '--encryption-keys', V3);
    expect(shown).toContain('response: 201');
    expect(shown.join('\n')).toContain('card-4242-/rot');
    const sealed = await keys('show', 'r-2', '--store', store);
    expect(sealed).toContain('response: 0');
    expect(sealed.join('\n')).not.toContain('card-4242');
  });
});
