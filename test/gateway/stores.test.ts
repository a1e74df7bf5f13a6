import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, postJson, ROOT, spawnGateway, startUpstream } from '../helpers/servers.js';
import { makeWithoutRowidFile } from '../helpers/sqlite-files.js';

// `--store redis://` and `--store postgres://` against the real servers, through the CLI.
const REDIS_URL = 'redis://127.0.0.1:6379';
const POSTGRES_URL = 'postgres://postgres@127.0.0.1:5432/test';
let upstream: Awaited<ReturnType<typeof startUpstream>>;

beforeAll(async () => {
  upstream = await startUpstream((_req, res) => {
    res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ n: upstream.hits.length }));
  });
});
afterAll(() => upstream.close());

/** A JSON log line, or undefined for anything else. */
function parsed(line: string): { level?: number; msg?: string; store?: string } | undefined {
  try {
    return JSON.parse(line) as { level?: number; msg?: string; store?: string };
  } catch {
    return undefined;
  }
}

/** The warn lines (pino level 40) about a SQLite table in an earlier layout. */
function layoutWarnings(logs: string[]): string[] {
  return logs
    .map(parsed)
    .filter((line) => line?.level === 40 && /earlier idempo version/.test(line.msg ?? ''))
    .map((line) => line?.msg ?? '');
}

/** Runs `fn` in a new temporary directory, removed afterwards. */
async function inTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'idempo-sqlite-layout-'));
  try {
    await fn(dir);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** `idempo serve` on the SQLite `file`, with `more` flags. */
const serveSqlite = (file: string, ...more: string[]) =>
  spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', `sqlite:${file}`, ...more]);

/** `idempo migrate` on the SQLite `file`. */
const migrateCli = (file: string) =>
  spawnSync(process.execPath, [CLI, 'migrate', '--store', `sqlite:${file}`], { cwd: ROOT, encoding: 'utf8' });

async function stop(gateway: Awaited<ReturnType<typeof spawnGateway>>): Promise<void> {
  gateway.child.kill('SIGTERM');
  await gateway.exited;
}

/** A request with a new key through the gateway at `url`, and what it answered. */
async function firstRequest(url: string, sku: string) {
  const key = randomUUID();
  const first = await postJson(`${url}/orders`, { sku }, key);
  expect(first.status).toBe(201);
  return { key, sku, body: await first.text() };
}

/** The same request again through `url`: replayed byte for byte, without reaching the upstream. */
async function expectReplayed(url: string, sent: { key: string; sku: string; body: string }): Promise<void> {
  const hits = upstream.hits.length;
  const replay = await postJson(`${url}/orders`, { sku: sent.sku }, sent.key);
  expect(replay.status).toBe(201);
  expect(replay.headers.get('idempotent-replayed')).toBe('true');
  expect(await replay.text()).toBe(sent.body);
  expect(upstream.hits.length).toBe(hits);
}

describe('gateway store URLs', () => {
  it('idempo migrate prepares PostgreSQL, and says so again without changing anything', () => {
    const first = spawnSync(process.execPath, [CLI, 'migrate', '--store', POSTGRES_URL], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(first.status, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/schema already at version 1|migrated schema from version 0 to 1/);
    const again = spawnSync(process.execPath, [CLI, 'migrate', '--store', POSTGRES_URL], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(again.status).toBe(0);
    expect(again.stdout).toMatch(/already at version 1/);
  });

  it('idempo migrate moves a SQLite table an earlier version made, keeps its records, and says so again without changing anything', async () => {
    await inTempDir(async (dir) => {
      const file = makeWithoutRowidFile(join(dir, 'old.db'));
      const gateway = await serveSqlite(file);
      expect(layoutWarnings(gateway.logs)).toEqual([
        expect.stringContaining(`run \`idempo migrate --store sqlite:${file}\`, or start it once with --migrate`),
      ]);
      const sent = await firstRequest(gateway.url, 'm-1');
      await stop(gateway);

      const moved = migrateCli(file);
      expect(moved.status, moved.stderr).toBe(0);
      expect(moved.stdout).toMatch(/migrated schema from version 1 to 2/);
      const again = migrateCli(file);
      expect(again.status, again.stderr).toBe(0);
      expect(again.stdout).toMatch(/already at version 2/);

      const after = await serveSqlite(file);
      expect(layoutWarnings(after.logs)).toEqual([]);
      await expectReplayed(after.url, sent);
      await stop(after);
    });
  });

  it('idempo serve --migrate moves a SQLite table an earlier version made at start, and replays what it held', async () => {
    await inTempDir(async (dir) => {
      const file = makeWithoutRowidFile(join(dir, 'old.db'));
      const before = await serveSqlite(file);
      const sent = await firstRequest(before.url, 's-1');
      await stop(before);

      const moving = await serveSqlite(file, '--migrate');
      expect(layoutWarnings(moving.logs)).toEqual([]);
      const moved = moving.logs
        .map(parsed)
        .filter((line) => line?.level === 30 && /moved the table/.test(line.msg ?? ''));
      expect(moved).toEqual([
        expect.objectContaining({
          store: `sqlite:${file}`,
          msg: `sqlite:${file}: moved the table to the current layout (version 1 to 2); every record was kept.`,
        }),
      ]);
      await expectReplayed(moving.url, sent);
      await stop(moving);

      // Moved once: the next start with --migrate has nothing to say.
      const again = await serveSqlite(file, '--migrate');
      expect(
        again.logs.map(parsed).filter((line) => /moved the table|earlier idempo version/.test(line?.msg ?? '')),
      ).toEqual([]);
      await stop(again);
    });
  });

  it('idempo serve --migrate that cannot move the table stops the start with the cause, and leaves the file as it was', async () => {
    await inTempDir(async (dir) => {
      const file = makeWithoutRowidFile(join(dir, 'old.db'), 'CREATE TABLE idempo_records_rowid (mine TEXT)');
      await expect(serveSqlite(file, '--migrate')).rejects.toThrow(
        /exited with 1 before listening: .*could not move idempo_records .*idempo_records_rowid already exists.*the table is as it was/,
      );
      const check = migrateCli(file);
      expect(check.status).not.toBe(0);
      expect(check.stderr).toMatch(/idempo_records_rowid already exists/);
    });
  });

  it('idempo serve on a SQLite file this version made logs no layout warning', async () => {
    await inTempDir(async (dir) => {
      const gateway = await serveSqlite(join(dir, 'new.db'));
      expect(gateway.logs.map(parsed).some((line) => line?.msg === 'idempo gateway listening')).toBe(true);
      expect(layoutWarnings(gateway.logs)).toEqual([]);
      await stop(gateway);
    });
  });

  it('idempo migrate on a store with no schema says there is nothing to do', () => {
    const out = spawnSync(process.execPath, [CLI, 'migrate', '--store', 'memory:'], { cwd: ROOT, encoding: 'utf8' });
    expect(out.status).toBe(0);
    expect(out.stdout).toMatch(/nothing to migrate/);
  });

  it.each([
    ['redis', REDIS_URL],
    ['postgres', POSTGRES_URL],
  ])('serves and replays on %s, shared by two gateway processes', async (_name, store) => {
    spawnSync(process.execPath, [CLI, 'migrate', '--store', POSTGRES_URL], { cwd: ROOT });
    const a = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', store]);
    const b = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', store]);
    try {
      const key = `gw-${randomUUID()}`;
      const first = await postJson(`${a.url}/pay`, { amount: 3 }, key);
      expect(first.status).toBe(201);
      const body = await first.text();
      const replay = await postJson(`${b.url}/pay`, { amount: 3 }, key);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe(body);
      expect((await postJson(`${b.url}/pay`, { amount: 4 }, key)).status).toBe(422);
    } finally {
      a.child.kill('SIGTERM');
      b.child.kill('SIGTERM');
      await Promise.all([a.exited, b.exited]);
    }
  });

  it('reports the store on /healthz: 200 when PostgreSQL answers, 503 unreachable when it does not', async () => {
    const up = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', POSTGRES_URL]);
    const down = await spawnGateway([
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      'postgres://postgres:pw@127.0.0.1:1/test',
    ]);
    try {
      const ok = await fetch(`${up.url}/healthz`);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toEqual({ status: 'ok', store: 'ok' });
      const unreachable = await fetch(`${down.url}/healthz`);
      expect(unreachable.status).toBe(503);
      expect(await unreachable.json()).toEqual({ status: 'unavailable', store: 'unreachable' });
      expect(down.logs.join('\n')).toContain('postgres://postgres:***@127.0.0.1:1/test');
      expect(down.logs.join('\n')).not.toContain(':pw@');
    } finally {
      up.child.kill('SIGTERM');
      down.child.kill('SIGTERM');
      await Promise.all([up.exited, down.exited]);
    }
  });
});
