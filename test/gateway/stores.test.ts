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
    const dir = mkdtempSync(join(tmpdir(), 'idempo-migrate-'));
    try {
      const file = makeWithoutRowidFile(join(dir, 'old.db'));
      const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', `sqlite:${file}`]);
      expect(layoutWarnings(gateway.logs)).toEqual([
        expect.stringContaining(`run \`idempo migrate --store sqlite:${file}\`, or start it once with --migrate`),
      ]);
      const key = randomUUID();
      const first = await postJson(`${gateway.url}/orders`, { sku: 'm-1' }, key);
      expect(first.status).toBe(201);
      const body = await first.text();
      gateway.child.kill('SIGTERM');
      await gateway.exited;

      const moved = spawnSync(process.execPath, [CLI, 'migrate', '--store', `sqlite:${file}`], {
        cwd: ROOT,
        encoding: 'utf8',
      });
      expect(moved.status, moved.stderr).toBe(0);
      expect(moved.stdout).toMatch(/migrated schema from version 1 to 2/);
      const again = spawnSync(process.execPath, [CLI, 'migrate', '--store', `sqlite:${file}`], {
        cwd: ROOT,
        encoding: 'utf8',
      });
      expect(again.status, again.stderr).toBe(0);
      expect(again.stdout).toMatch(/already at version 2/);

      const after = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', `sqlite:${file}`]);
      expect(layoutWarnings(after.logs)).toEqual([]);
      const hits = upstream.hits.length;
      const replay = await postJson(`${after.url}/orders`, { sku: 'm-1' }, key);
      expect(replay.status).toBe(201);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe(body);
      expect(upstream.hits.length).toBe(hits);
      after.child.kill('SIGTERM');
      await after.exited;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('idempo serve --migrate moves a SQLite table an earlier version made at start, and replays what it held', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'idempo-migrate-'));
    try {
      const file = makeWithoutRowidFile(join(dir, 'old.db'));
      const before = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', `sqlite:${file}`]);
      const key = randomUUID();
      const first = await postJson(`${before.url}/orders`, { sku: 's-1' }, key);
      expect(first.status).toBe(201);
      const body = await first.text();
      before.child.kill('SIGTERM');
      await before.exited;

      const args = ['--upstream', upstream.url, '--port', '0', '--store', `sqlite:${file}`, '--migrate'];
      const moving = await spawnGateway(args);
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
      const hits = upstream.hits.length;
      const replay = await postJson(`${moving.url}/orders`, { sku: 's-1' }, key);
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(await replay.text()).toBe(body);
      expect(upstream.hits.length).toBe(hits);
      moving.child.kill('SIGTERM');
      await moving.exited;

      // Moved once: the next start with --migrate has nothing to say.
      const again = await spawnGateway(args);
      expect(
        again.logs.map(parsed).filter((line) => /moved the table|earlier idempo version/.test(line?.msg ?? '')),
      ).toEqual([]);
      again.child.kill('SIGTERM');
      await again.exited;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('idempo serve --migrate that cannot move the table stops the start with the cause, and leaves the file as it was', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'idempo-migrate-'));
    try {
      const file = makeWithoutRowidFile(join(dir, 'old.db'), 'CREATE TABLE idempo_records_rowid (mine TEXT)');
      const started = spawnGateway([
        '--upstream',
        upstream.url,
        '--port',
        '0',
        '--store',
        `sqlite:${file}`,
        '--migrate',
      ]);
      await expect(started).rejects.toThrow(
        /exited with 1 before listening: .*could not move idempo_records .*idempo_records_rowid already exists.*the table is as it was/,
      );
      const check = spawnSync(process.execPath, [CLI, 'migrate', '--store', `sqlite:${file}`], {
        cwd: ROOT,
        encoding: 'utf8',
      });
      expect(check.status).not.toBe(0);
      expect(check.stderr).toMatch(/idempo_records_rowid already exists/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('idempo serve on a SQLite file this version made logs no layout warning', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'idempo-layout-'));
    try {
      const gateway = await spawnGateway([
        '--upstream',
        upstream.url,
        '--port',
        '0',
        '--store',
        `sqlite:${join(dir, 'new.db')}`,
      ]);
      expect(gateway.logs.map(parsed).some((line) => line?.msg === 'idempo gateway listening')).toBe(true);
      expect(layoutWarnings(gateway.logs)).toEqual([]);
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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
