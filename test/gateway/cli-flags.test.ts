import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signRequest } from '../../src/signatures/index.js';
import { startRedisServer } from '../helpers/redis-cluster.js';
import { CLI, freePort, postJson, ROOT, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// Every flag of `idempo serve` and `idempo migrate`, passed to the real CLI, with its effect.
let upstream: Awaited<ReturnType<typeof startUpstream>>;
const dir = mkdtempSync(join(tmpdir(), 'idempo-flags-'));
const hitsFor = (path: string) => upstream.hits.filter((h) => h.url === path).length;
/** When the upstream sent its answer to each request target, last one wins. */
const upstreamAnsweredAt = new Map<string, number>();

beforeAll(async () => {
  upstream = await startUpstream(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/slow') await sleep(Number(url.searchParams.get('ms') ?? 800));
    if (url.pathname === '/fail') return void res.writeHead(500, { 'content-type': 'text/plain' }).end('boom');
    if (url.pathname === '/large') return void res.writeHead(200).end('x'.repeat(4096));
    upstreamAnsweredAt.set(req.url ?? '', Date.now());
    res
      .writeHead(201, { 'content-type': 'application/json' })
      .end(JSON.stringify({ n: upstream.hits.length, tenant: req.headers['x-tenant'] ?? null }));
  });
});

afterAll(async () => {
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Runs a gateway with `flags`, then `body`, then stops it. */
async function withGateway(
  flags: string[],
  body: (gateway: Awaited<ReturnType<typeof spawnGateway>>) => Promise<void>,
  env: Record<string, string> = {},
) {
  const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', 'memory:', ...flags], env);
  try {
    await body(gateway);
  } finally {
    gateway.child.kill('SIGTERM');
    await gateway.exited;
  }
}

function cli(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, ...env },
    timeout: 20_000,
  });
}

describe('idempo serve flags', () => {
  it('--host listens on the address given', async () => {
    await withGateway(['--host', '127.0.0.2'], async (gateway) => {
      expect(gateway.url).toMatch(/^http:\/\/127\.0\.0\.2:\d+$/);
      expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
    });
  });

  it('--methods decides which methods take part', async () => {
    await withGateway(['--methods', 'put'], async (gateway) => {
      const put = () =>
        fetch(`${gateway.url}/m-put`, { method: 'PUT', body: '{}', headers: { 'idempotency-key': 'm1' } });
      await put();
      expect((await put()).headers.get('idempotent-replayed')).toBe('true');
      await postJson(`${gateway.url}/m-post`, {}, 'm2');
      await postJson(`${gateway.url}/m-post`, {}, 'm2');
      expect([hitsFor('/m-put'), hitsFor('/m-post')]).toEqual([1, 2]);
    });
  });

  it('--scope-header keeps tenants apart', async () => {
    await withGateway(['--scope-header', 'x-tenant'], async (gateway) => {
      const a = await postJson(`${gateway.url}/scoped`, {}, 's1', { 'x-tenant': 'a' });
      const b = await postJson(`${gateway.url}/scoped`, {}, 's1', { 'x-tenant': 'b' });
      expect([a.status, b.status]).toEqual([201, 201]);
      expect(b.headers.get('idempotent-replayed')).toBeNull();
      expect(hitsFor('/scoped')).toBe(2);
    });
  });

  it('--concurrent wait gives a duplicate the original answer instead of 409', async () => {
    await withGateway(['--concurrent', 'wait'], async (gateway) => {
      const first = postJson(`${gateway.url}/slow?ms=600`, {}, 'c1');
      while (hitsFor('/slow?ms=600') === 0) await sleep(20);
      const second = await postJson(`${gateway.url}/slow?ms=600`, {}, 'c1');
      expect(second.status).toBe(201);
      expect(await second.text()).toBe(await (await first).text());
      expect(hitsFor('/slow?ms=600')).toBe(1);
    });
  });

  it('--upstream-timeout answers 504 early; --upstream-deadline is accepted with it', async () => {
    await withGateway(['--upstream-timeout', '200ms', '--upstream-deadline', '10s'], async (gateway) => {
      const res = await postJson(`${gateway.url}/slow?ms=900`, {}, 't1');
      expect(res.status).toBe(504);
      expect((await res.json()).code).toBe('IDEMPO_UPSTREAM_TIMEOUT');
    });
  });

  it('--drain-timeout hands over work still running when it passes', async () => {
    const gateway = await spawnGateway([
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      'memory:',
      '--drain-timeout',
      '200ms',
    ]);
    const pending = postJson(`${gateway.url}/slow?ms=3000`, {}, 'd1').catch((e: unknown) => e);
    while (hitsFor('/slow?ms=3000') === 0) await sleep(20);
    gateway.child.kill('SIGTERM');
    expect(await gateway.exited).toEqual({ code: 0, signal: null });
    expect(gateway.logs.some((l) => l.includes('drain timed out'))).toBe(true);
    await pending;
  });

  it('--release-on none keeps a 500, and the retry replays it', async () => {
    await withGateway(['--release-on', 'none'], async (gateway) => {
      await postJson(`${gateway.url}/fail`, {}, 'r1');
      const retry = await postJson(`${gateway.url}/fail`, {}, 'r1');
      expect(retry.status).toBe(500);
      expect(retry.headers.get('idempotent-replayed')).toBe('true');
      expect(hitsFor('/fail')).toBe(1);
    });
  });

  it('--max-body-bytes, --max-response-bytes, --mismatch-status and --error-format stripe', async () => {
    const flags = ['--max-body-bytes', '1kb', '--max-response-bytes', '1kb', '--mismatch-status', '400'];
    await withGateway([...flags, '--error-format', 'stripe'], async (gateway) => {
      const big = await postJson(`${gateway.url}/big`, { blob: 'x'.repeat(2000) }, 'b1');
      expect(big.status).toBe(413);
      expect((await big.json()).error.code).toBe('idempo_body_too_large');
      await postJson(`${gateway.url}/large`, {}, 'l1');
      const notKept = await postJson(`${gateway.url}/large`, {}, 'l1');
      expect(notKept.status).toBe(410);
      await postJson(`${gateway.url}/mm`, { a: 1 }, 'mm1');
      expect((await postJson(`${gateway.url}/mm`, { a: 2 }, 'mm1')).status).toBe(400);
    });
  });

  it('--complete-timeout and the client timeouts take their values (and refuse bare numbers)', async () => {
    const flags = ['--complete-timeout', '2s', '--headers-timeout', '300ms', '--request-timeout', '0'];
    await withGateway([...flags, '--keep-alive-timeout', '300ms'], async (gateway) => {
      const socket = connect(Number(new URL(gateway.url).port), '127.0.0.1');
      let text = '';
      socket.on('data', (chunk) => {
        text += chunk;
      });
      socket.write('GET /partial HTTP/1.1\r\nHost: x\r\n');
      await new Promise((resolve) => socket.once('close', resolve));
      expect(text).toMatch(/^HTTP\/1\.1 408/);
    });
    const bad = cli(['serve', '--upstream', upstream.url, '--complete-timeout', '5']);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim()).toBe(
      `error: option '--complete-timeout <duration>' argument '5' is invalid. "5" has no unit: write e.g. 5s or 5ms (units: ms, s, m, h, d).`,
    );
  });

  it('--log-format pretty and --log-level warn', async () => {
    const port = await freePort();
    const child = spawn(
      process.execPath,
      [
        CLI,
        'serve',
        '--upstream',
        upstream.url,
        '--port',
        String(port),
        '--store',
        'memory:',
        '--log-format',
        'pretty',
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    child.stdout.on('data', (chunk) => {
      out += chunk;
    });
    while (!out.includes('listening')) await sleep(20);
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(out.split('\n')[0]).toMatch(
      /^\d\d:\d\d:\d\d\.\d{3} INFO {2}idempo gateway listening url=http:\/\/127\.0\.0\.1:\d+ port=\d+ upstream=http:\/\/127\.0\.0\.1:\d+ store=memory version=\d+\.\d+\.\d+/,
    );

    const quiet = spawn(
      process.execPath,
      [CLI, 'serve', '--upstream', upstream.url, '--port', String(port), '--store', 'memory:', '--log-level', 'warn'],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let quietOut = '';
    quiet.stdout.on('data', (chunk) => {
      quietOut += chunk;
    });
    while ((await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.status !== 200) await sleep(50);
    await postJson(`http://127.0.0.1:${port}/q`, {}, 'q1');
    quiet.kill('SIGTERM');
    await new Promise((resolve) => quiet.once('exit', resolve));
    expect(quietOut).not.toMatch(/"level":30/);
  });

  it('JSON logs (the default) give durations rounded to 0.1 ms, never float noise', async () => {
    await withGateway([], async (gateway) => {
      await postJson(`${gateway.url}/rounded`, {}, 'round-1');
      await postJson(`${gateway.url}/rounded`, {}, 'round-1');
      await sleep(100);
      const durations = gateway.logs.flatMap((line) => {
        const entry = JSON.parse(line) as { durationMs?: number };
        return entry.durationMs === undefined ? [] : [String(entry.durationMs)];
      });
      expect(durations.length).toBeGreaterThanOrEqual(2);
      expect(durations.filter((d) => !/^\d+(\.\d)?$/.test(d))).toEqual([]);
    });
  });

  it('--config reads a JSON file; flags and environment win over it', async () => {
    const file = join(dir, 'idempo.json');
    writeFileSync(file, JSON.stringify({ methods: ['PUT'], requireKey: ['/cfg-required'], upstreamTimeout: '150ms' }));
    await withGateway(['--config', file, '--methods', 'POST'], async (gateway) => {
      expect((await postJson(`${gateway.url}/cfg-required`, {})).status).toBe(400);
      expect((await postJson(`${gateway.url}/slow?ms=700`, {}, 'cfg-1')).status).toBe(504);
    });
    writeFileSync(file, JSON.stringify({ upstreem: 'http://x' }));
    const bad = cli(['serve', '--config', file]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^idempo: IDEMPO_CONFIG_INVALID: --config: unknown option "upstreem"/);
  });
});

describe('idempo serve flags whose effect takes longer to see', () => {
  it('--ttl: a completed key replays within it and runs again once it has passed', async () => {
    await withGateway(['--ttl', '1s', '--lease', '1s'], async (gateway) => {
      await postJson(`${gateway.url}/ttl`, {}, 'ttl-1');
      expect((await postJson(`${gateway.url}/ttl`, {}, 'ttl-1')).headers.get('idempotent-replayed')).toBe('true');
      await sleep(1_300);
      const again = await postJson(`${gateway.url}/ttl`, {}, 'ttl-1');
      expect(again.headers.get('idempotent-replayed')).toBeNull();
      expect(hitsFor('/ttl')).toBe(2);
    });
  });

  it('--upstream-deadline: past it the late answer is not stored and the key stays in flight (409), where the default would replay it', async () => {
    const flags = ['--upstream-timeout', '200ms', '--upstream-deadline', '400ms'];
    await withGateway(flags, async (gateway) => {
      expect((await postJson(`${gateway.url}/slow?ms=1000`, {}, 'dl-1')).status).toBe(504);
      await sleep(1_200);
      const retry = await postJson(`${gateway.url}/slow?ms=1000`, {}, 'dl-1');
      expect(retry.status).toBe(409);
      expect(hitsFor('/slow?ms=1000')).toBe(1);
    });
    await withGateway(['--upstream-timeout', '200ms'], async (gateway) => {
      expect((await postJson(`${gateway.url}/slow?ms=900`, {}, 'dl-2')).status).toBe(504);
      await sleep(1_100);
      const retry = await postJson(`${gateway.url}/slow?ms=900`, {}, 'dl-2');
      expect([retry.status, retry.headers.get('idempotent-replayed')]).toEqual([201, 'true']);
    });
  });

  it('--keep-alive-timeout closes an idle connection; --request-timeout 0 lets a slow body finish, a short one answers 408', async () => {
    const slowBody = async (url: string) => {
      const socket = connect(Number(new URL(url).port), '127.0.0.1');
      let text = '';
      socket.on('data', (chunk) => {
        text += chunk;
      });
      const closed = new Promise((resolve) => socket.once('close', resolve));
      // Keyed, so the gateway reads the body whole before anything goes upstream.
      socket.write(
        'POST /slow-body HTTP/1.1\r\nHost: x\r\nIdempotency-Key: slow-body\r\nContent-Length: 4\r\nConnection: close\r\n\r\nab',
      );
      await sleep(900);
      if (!socket.destroyed) socket.write('cd');
      await closed;
      return text;
    };
    const timeouts = ['--headers-timeout', '300ms', '--keep-alive-timeout', '300ms'];
    await withGateway([...timeouts, '--request-timeout', '0'], async (gateway) => {
      const socket = connect(Number(new URL(gateway.url).port), '127.0.0.1');
      socket.resume();
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.write('GET /idle HTTP/1.1\r\nHost: x\r\n\r\n');
      const started = Date.now();
      await closed;
      expect(Date.now() - started).toBeLessThan(3_000);
      expect(await slowBody(gateway.url)).toMatch(/^HTTP\/1\.1 201/);
    });
    await withGateway([...timeouts, '--request-timeout', '500ms'], async (gateway) => {
      expect(await slowBody(gateway.url)).toMatch(/^HTTP\/1\.1 408/);
    });
  });

  it('--complete-timeout: a result the store cannot take ends the response once it passes, not after the default 5 s', async () => {
    const redis = await startRedisServer();
    try {
      const store = `redis://127.0.0.1:${redis.port}`;
      await withGateway(['--store', store, '--complete-timeout', '300ms'], async (gateway) => {
        const answer = postJson(`${gateway.url}/slow?ms=600&case=complete-timeout`, {}, 'ct-1');
        while (hitsFor('/slow?ms=600&case=complete-timeout') === 0) await sleep(20);
        await redis.kill();
        // The upstream's status and headers stream through; the end of the body waits for the
        // store, and is never sent when the store does not take the result: the client retries.
        const outcome = await answer.then(
          (res) =>
            res.text().then(
              () => `${res.status} complete`,
              () => `${res.status} aborted`,
            ),
          () => 'failed',
        );
        const waited = Date.now() - (upstreamAnsweredAt.get('/slow?ms=600&case=complete-timeout') ?? Number.NaN);
        expect(outcome).toBe('201 aborted');
        expect(waited).toBeLessThan(2_500);
        expect(gateway.logs.some((l) => l.includes('"type":"store_error"'))).toBe(true);
      });
    } finally {
      await redis.stop();
    }
  });

  it('--admin-host and --admin-token-file: the admin listener on that interface, its key routes behind the token', async () => {
    const file = join(dir, 'admin-token');
    writeFileSync(file, 'a-token-long-enough-1234\n');
    const flags = ['--admin-port', '0', '--admin-host', '127.0.0.3', '--admin-token-file', file];
    await withGateway(flags, async (gateway) => {
      const line = gateway.logs.map((l) => JSON.parse(l)).find((entry) => entry.msg === 'idempo admin listening');
      expect(line?.adminUrl).toMatch(/^http:\/\/127\.0\.0\.3:\d+$/);
      const records = `${line.adminUrl}/admin/api/records`;
      expect((await fetch(records)).status).toBe(401);
      const allowed = await fetch(records, { headers: { authorization: 'Bearer a-token-long-enough-1234' } });
      expect(allowed.status).toBe(200);
    });
  });

  it('--signature-keys refuses unsigned keyed requests; --signature-optional lets them through; --signature-max-age refuses older signatures', async () => {
    const publicJwk = { kty: 'OKP', crv: 'Ed25519', x: 'JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs' };
    const privateJwk = { ...publicJwk, d: 'n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU' };
    const file = join(dir, 'signature-keys.json');
    writeFileSync(file, JSON.stringify({ keys: [{ kid: 'client-1', ...publicJwk }] }));
    const signed = async (url: string, key: string, ageSeconds: number) => {
      const headers = new Headers({ 'content-type': 'application/json', 'idempotency-key': key });
      const body = new TextEncoder().encode('{}');
      const created = Math.floor(Date.now() / 1_000) - ageSeconds;
      await signRequest(
        { method: 'POST', url, headers, body },
        { keyid: 'client-1', alg: 'ed25519', key: privateJwk },
        { created },
      );
      return fetch(url, { method: 'POST', headers, body });
    };
    const code = async (res: Response) => [res.status, ((await res.json()) as { code?: string }).code];

    await withGateway(['--signature-keys', file, '--signature-max-age', '5s'], async (gateway) => {
      expect(await code(await postJson(`${gateway.url}/sig`, {}, 'sig-unsigned'))).toEqual([
        401,
        'IDEMPO_SIGNATURE_MISSING',
      ]);
      expect((await signed(`${gateway.url}/sig`, 'sig-fresh', 0)).status).toBe(201);
      const old = await signed(`${gateway.url}/sig`, 'sig-old', 60);
      expect(old.status).toBe(401);
      expect(((await old.json()) as { code: string }).code).toBe('IDEMPO_SIGNATURE_EXPIRED');
    });
    await withGateway(['--signature-keys', file, '--signature-optional'], async (gateway) => {
      expect((await postJson(`${gateway.url}/sig`, {}, 'sig-unsigned-2')).status).toBe(201);
      // Without --signature-max-age, a signature a minute old is within the default 5 minutes.
      expect((await signed(`${gateway.url}/sig`, 'sig-old-2', 60)).status).toBe(201);
    });
  });
});

describe('every flag is exercised', () => {
  /** Where a test spawns the CLI with each flag and asserts its effect (this file unless named). */
  const EXERCISED: Record<string, Record<string, string>> = {
    serve: {
      '--upstream': 'test/gateway/cli-flags.test.ts',
      '--port': 'test/gateway/cli-flags.test.ts',
      '--host': 'test/gateway/cli-flags.test.ts',
      '--admin-port': 'test/gateway/admin.test.ts',
      '--admin-host': 'test/gateway/cli-flags.test.ts',
      '--admin-token-file': 'test/gateway/cli-flags.test.ts',
      '--store': 'test/gateway/stores.test.ts',
      '--migrate': 'test/gateway/cli-flags.test.ts',
      '--methods': 'test/gateway/cli-flags.test.ts',
      '--require-key': 'test/gateway/admin.test.ts',
      '--scope-header': 'test/gateway/cli-flags.test.ts',
      '--ttl': 'test/gateway/cli-flags.test.ts',
      '--lease': 'test/gateway/process.test.ts',
      '--concurrent': 'test/gateway/cli-flags.test.ts',
      '--release-on': 'test/gateway/cli-flags.test.ts',
      '--max-body-bytes': 'test/gateway/cli-flags.test.ts',
      '--max-response-bytes': 'test/gateway/cli-flags.test.ts',
      '--mismatch-status': 'test/gateway/cli-flags.test.ts',
      '--error-format': 'test/gateway/cli-flags.test.ts',
      '--complete-timeout': 'test/gateway/cli-flags.test.ts',
      '--upstream-timeout': 'test/gateway/cli-flags.test.ts',
      '--upstream-deadline': 'test/gateway/cli-flags.test.ts',
      '--drain-timeout': 'test/gateway/never-twice.test.ts',
      '--headers-timeout': 'test/gateway/cli-flags.test.ts',
      '--request-timeout': 'test/gateway/cli-flags.test.ts',
      '--keep-alive-timeout': 'test/gateway/cli-flags.test.ts',
      '--log-format': 'test/gateway/cli-flags.test.ts',
      '--log-level': 'test/gateway/cli-flags.test.ts',
      '--signature-keys': 'test/gateway/cli-flags.test.ts',
      '--signature-optional': 'test/gateway/cli-flags.test.ts',
      '--signature-max-age': 'test/gateway/cli-flags.test.ts',
      '--encryption-keys': 'test/encryption/gateway.test.ts',
      '--limit-in-flight': 'test/gateway/limits.test.ts',
      '--limit-new-keys': 'test/gateway/limits.test.ts',
      '--limit-scopes': 'test/gateway/limits.test.ts',
      '--config': 'test/gateway/cli-flags.test.ts',
    },
    migrate: { '--store': 'test/gateway/stores.test.ts' },
  };

  it.each(Object.keys(EXERCISED))(
    'idempo %s: each flag of --help has a test that passes it, and is in the docs flag table',
    (command) => {
      const help = cli([command, '--help']).stdout;
      const flags = [...help.matchAll(/^ {2}(?:-\w, )?(--[a-z-]+)/gm)]
        .map((m) => m[1] as string)
        .filter((f) => f !== '--help');
      expect(flags.sort()).toEqual(Object.keys(EXERCISED[command] ?? {}).sort());
      for (const [flag, file] of Object.entries(EXERCISED[command] ?? {}))
        expect(readFileSync(join(ROOT, file), 'utf8'), `${file} passes ${flag}`).toContain(`'${flag}'`);
      if (command === 'serve') {
        const table = readFileSync(join(ROOT, 'docs', 'gateway.md'), 'utf8');
        expect(flags.filter((flag) => !table.includes(`| \`${flag}`))).toEqual([]);
      }
    },
  );
});

describe('one-line errors at start', () => {
  it.each([
    [['--ttl', '5'], `argument '5' is invalid. "5" has no unit`],
    [['--port', 'http'], 'expected a port number from 0 to 65535'],
    [['--max-body-bytes', 'lots'], 'expected a positive number of bytes'],
    [['--release-on', '700'], 'expected statuses or classes like 5xx,429, or none; got "700"'],
    [['--mismatch-status', '418'], 'expected 422 (the IETF draft) or 400 (Stripe)'],
    [['--log-format', 'xml'], "argument 'xml' is invalid. Allowed choices are json, pretty."],
    [['--lease', '1h', '--ttl', '1m'], 'ttl (60000 ms) must not be shorter than lease'],
    [['--port', '0', '--host', '192.0.2.1'], '--host: "192.0.2.1" is not an address of this machine (EADDRNOTAVAIL)'],
    [['--port', '0', '--host', 'nohost.invalid'], '--host: "nohost.invalid" is not a host name this machine resolves'],
    [
      ['--port', '0', '--admin-port', '0', '--admin-host', '192.0.2.1'],
      '--admin-host: "192.0.2.1" is not an address of this machine',
    ],
    [['--admin-token-file', '/nonexistent/token'], '--admin-token-file: cannot read /nonexistent/token (ENOENT).'],
    [
      ['--store', 'sqlite:/nonexistent/dir/idempo.db'],
      '--store sqlite:/nonexistent/dir/idempo.db: cannot open the database (',
    ],
  ])('serve %j', (flags, message) => {
    const out = cli(['serve', '--upstream', upstream.url, '--store', 'memory:', ...flags]);
    expect(out.status).toBe(1);
    expect(out.stderr.trim().split('\n')).toHaveLength(1);
    expect(out.stderr).toContain(message);
  });

  it('LOG_LEVEL=verbose is a clear line, not a pino crash', () => {
    const out = cli(['serve', '--upstream', upstream.url, '--store', 'memory:'], { LOG_LEVEL: 'verbose' });
    expect(out.status).toBe(1);
    expect(out.stderr.trim()).toBe(
      "error: option '--log-level <level>' value 'verbose' from env 'LOG_LEVEL' is invalid. expected one of fatal, error, warn, info, debug, trace, silent.",
    );
  });

  it('a busy port names the address and the flag', async () => {
    await withGateway([], async (gateway) => {
      const { port } = new URL(gateway.url);
      const out = cli(['serve', '--upstream', upstream.url, '--store', 'memory:', '--port', port]);
      expect(out.status).toBe(1);
      expect(out.stderr.trim()).toBe(
        `idempo: IDEMPO_CONFIG_INVALID: --port: 127.0.0.1:${port} is already in use (another gateway, or another server?); pick another with --port.`,
      );
    });
  });
});

describe('PostgreSQL schema: idempo migrate, --migrate, and an unmigrated database', () => {
  const database = `idempo_unmigrated_${randomUUID().slice(0, 8)}`;
  const url = `postgres://postgres@127.0.0.1:5432/${database}`;
  const admin = new pg.Pool({ connectionString: 'postgres://postgres@127.0.0.1:5432/test', max: 1 });

  beforeAll(async () => {
    await admin.query(`CREATE DATABASE ${database}`);
  });
  afterAll(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await admin.end();
  });

  it('refuses to start on an unmigrated database with the migrate command; --migrate migrates; a dropped schema gives 503 IDEMPO_STORE_NOT_MIGRATED', async () => {
    const refused = cli(['serve', '--upstream', upstream.url, '--port', '0', '--store', url]);
    expect(refused.status).toBe(1);
    expect(refused.stderr.trim().split('\n')).toHaveLength(1);
    expect(refused.stderr).toContain(`IDEMPO_STORE_NOT_MIGRATED: ${url} has no idempo schema`);
    expect(refused.stderr).toContain(`Run \`idempo migrate --store ${url}\``);

    const gateway = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', url, '--migrate']);
    try {
      expect((await fetch(`${gateway.url}/healthz`)).status).toBe(200);
      expect((await postJson(`${gateway.url}/pg`, {}, 'pg-1')).status).toBe(201);
      const db = new pg.Pool({ connectionString: url, max: 1 });
      await db.query('DROP TABLE idempo_keys; DROP TABLE idempo_migrations');
      await db.end();
      let health: Response;
      do {
        await sleep(200);
        health = await fetch(`${gateway.url}/healthz`);
      } while (health.status === 200);
      expect(health.status).toBe(503);
      expect(await health.json()).toEqual({ status: 'unavailable', store: 'not_migrated' });
      const keyed = await postJson(`${gateway.url}/pg`, {}, 'pg-2');
      expect(keyed.status).toBe(503);
      expect((await keyed.json()).code).toBe('IDEMPO_STORE_NOT_MIGRATED');
    } finally {
      gateway.child.kill('SIGTERM');
      await gateway.exited;
    }

    const migrated = cli(['migrate', '--store', url]);
    expect(migrated.status, migrated.stderr).toBe(0);
    expect(migrated.stdout).toMatch(/migrated schema from version 0 to 1/);
  });
});
