import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, postJson, ROOT, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// `idempo keys` against records the gateway really wrote: on SQLite (a file both processes
// open), and on the shared PostgreSQL and Redis.
const dir = mkdtempSync(join(tmpdir(), 'idempo-keys-'));
const SQLITE = `sqlite:${join(dir, 'keys.db')}`;
const POSTGRES = 'postgres://postgres@127.0.0.1:5432/test';
const REDIS = 'redis://127.0.0.1:6379';
let upstream: Awaited<ReturnType<typeof startUpstream>>;
/** Lets the held `/slow` request answer. */
let letGo: () => void = () => {};

function keys(...args: string[]) {
  const out = spawnSync(process.execPath, [CLI, 'keys', ...args], { cwd: ROOT, encoding: 'utf8' });
  return { status: out.status, stdout: out.stdout, stderr: out.stderr };
}

beforeAll(async () => {
  upstream = await startUpstream(async (req, res) => {
    if (req.url === '/slow') await new Promise<void>((resolve) => (letGo = resolve));
    const status = req.url === '/reject' ? 422 : 201;
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ n: upstream.hits.length }));
  });
  spawnSync(process.execPath, [CLI, 'migrate', '--store', POSTGRES], { cwd: ROOT });
});
afterAll(() => {
  upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

async function withGateway<T>(store: string, run: (url: string) => Promise<T>, ...args: string[]): Promise<T> {
  const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', store, ...args]);
  try {
    return await run(gateway.url);
  } finally {
    gateway.child.kill('SIGTERM');
    await gateway.exited;
  }
}

describe('idempo keys', () => {
  it('shows a stored 4xx under the client key and its scope, deletes it, and the retry then runs', async () => {
    const key = `k-${randomUUID()}`;
    const hits = () => upstream.hits.filter((h) => h.url === '/reject').length;
    const before = hits();
    await withGateway(
      SQLITE,
      async (url) => {
        const first = await postJson(`${url}/reject`, { amount: 1 }, key, { 'x-tenant': 'acme' });
        expect(first.status).toBe(422);
      },
      '--scope-header',
      'x-tenant',
      '--release-on',
      '5xx',
    );
    // Without the scope it is another record: there is none.
    const unscoped = keys('show', key, '--store', SQLITE);
    expect(unscoped.status).toBe(1);
    expect(unscoped.stdout).toMatch(/^No record under key "k-/);

    const shown = keys('show', key, '--scope', 'acme', '--store', SQLITE);
    expect(shown.status, shown.stderr).toBe(0);
    expect(shown.stdout).toMatch(/^state: +completed$/m);
    expect(shown.stdout).toMatch(/^response: 422$/m);
    expect(shown.stdout).toContain('"n":');

    const json = JSON.parse(keys('show', key, '--scope', 'acme', '--store', SQLITE, '--json').stdout);
    expect(json.record.state).toBe('completed');
    expect(json.record.response.status).toBe(422);
    expect(JSON.parse(json.record.response.bodyText)).toEqual({ n: expect.any(Number) });
    expect(json.record.key).not.toContain(key);

    const listed = JSON.parse(keys('list', '--state', 'completed', '--store', SQLITE, '--json').stdout);
    expect(listed.records.map((r: { key: string }) => r.key)).toContain(json.record.key);

    const removed = keys('delete', '--stored-key', json.record.key, '--store', SQLITE);
    expect(removed.status, removed.stderr).toBe(0);
    expect(removed.stdout).toMatch(/^Deleted the record under /);
    expect(keys('delete', key, '--scope', 'acme', '--store', SQLITE).stdout).toMatch(/nothing deleted/);

    await withGateway(
      SQLITE,
      async (url) => {
        const retry = await postJson(`${url}/reject`, { amount: 1 }, key, { 'x-tenant': 'acme' });
        expect(retry.status).toBe(422);
        expect(retry.headers.get('idempotent-replayed')).toBeNull();
      },
      '--scope-header',
      'x-tenant',
    );
    expect(hits()).toBe(before + 2);
  });

  it('refuses to delete a key in flight unless forced, and lists it as in flight', async () => {
    const key = `k-${randomUUID()}`;
    await withGateway(SQLITE, async (url) => {
      const running = postJson(`${url}/slow`, { amount: 1 }, key);
      await sleep(400);
      const listed = keys('list', '--state', 'in_flight', '--store', SQLITE);
      expect(listed.stdout).toMatch(/in_flight +age [^ ]+ +lease .+ left/);
      const refused = keys('delete', key, '--store', SQLITE);
      expect(refused.status).toBe(1);
      expect(refused.stdout).toMatch(/^Not deleted: .* is in flight with a live lease/);
      const forced = keys('delete', key, '--store', SQLITE, '--force', '--json');
      expect(JSON.parse(forced.stdout).result).toBe('deleted');
      // The owner finishes, but its completion is refused: it no longer owns the key. Its head
      // went out as it streamed (all but the last byte of a Content-Length body wait for the
      // store), so the gateway cuts the response: the client never gets a whole success that
      // is not stored.
      letGo();
      const late = await running;
      await expect(late.text()).rejects.toThrow(/terminated/);
    });
  });

  it.each([
    ['postgres', POSTGRES],
    ['redis', REDIS],
  ])('shows and deletes a record on %s', async (_name, store) => {
    const key = `k-${randomUUID()}`;
    await withGateway(store, async (url) => {
      expect((await postJson(`${url}/pay`, { amount: 2 }, key)).status).toBe(201);
    });
    const shown = JSON.parse(keys('show', key, '--store', store, '--json').stdout);
    expect(shown.record.state).toBe('completed');
    expect(shown.record.response.status).toBe(201);
    expect(keys('delete', key, '--store', store).stdout).toMatch(/^Deleted/);
    expect(keys('show', key, '--store', store).status).toBe(1);
  });

  it('says what is wrong with its arguments in one line', () => {
    const both = keys('show', 'k', '--stored-key', 'abc', '--store', SQLITE);
    expect(both.status).toBe(1);
    expect(both.stderr).toMatch(/^idempo: IDEMPO_CONFIG_INVALID: give either a key/);
    const none = keys('delete', '--store', SQLITE);
    expect(none.stderr).toMatch(/give the Idempotency-Key, or --stored-key/);
    expect(keys('list', '--store', SQLITE, '--limit', '0').stderr).toMatch(/expected a positive integer/);
    expect(keys('list', '--store', SQLITE, '--state', 'done').stderr).toMatch(
      /Allowed choices are in_flight, completed, released/,
    );
  });
});
