import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, ROOT, sleep, startUpstream } from '../helpers/servers.js';

// The package as a registry user gets it: packed from a copy of the working tree with no dist/
// (so `prepack` must build it, as from a fresh clone, and the shared tree's dist/ is left alone
// for the tests running beside this one), then installed into a new app under the OS temp dir,
// where module resolution cannot walk up into this repository's node_modules. The install
// builds better-sqlite3 from source where no prebuilt binary can be fetched: that dominates.

const run = promisify(execFile);
const SETUP_TIMEOUT = 240_000;
const work = mkdtempSync(join(tmpdir(), 'idempo-tarball-'));
const app = join(work, 'app');
const installed = join(app, 'node_modules', 'idempo');
let tarball = '';

/** The environment without npm's lifecycle variables, so a nested npm acts like one a user started. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (/^npm_/i.test(name) || name === 'NODE_PATH' || name === 'INIT_CWD' || name === 'NODE_OPTIONS') continue;
    env[name] = value;
  }
  return env;
}

async function npm(args: string[], cwd: string) {
  return run('npm', args, { cwd, env: cleanEnv(), encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)));
}

beforeAll(async () => {
  // Nothing above the app may offer packages: it must live in a tree of its own.
  for (let dir = dirname(app); dir !== dirname(dir); dir = dirname(dir)) {
    expect(existsSync(join(dir, 'node_modules')), `${dir}/node_modules`).toBe(false);
    expect(existsSync(join(dir, 'package.json')), `${dir}/package.json`).toBe(false);
  }

  // A copy of what `files` names plus the build's inputs; dev tools come from the repo.
  const repo = join(work, 'repo');
  mkdirSync(repo);
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { files: string[] };
  const entries = ['package.json', 'tsconfig.json', 'tsconfig.build.json', 'README.md', 'LICENSE', ...pkg.files];
  for (const entry of entries.filter((e) => !e.startsWith('!') && e !== 'dist')) {
    cpSync(join(ROOT, entry), join(repo, entry), { recursive: true });
  }
  symlinkSync(join(ROOT, 'node_modules'), join(repo, 'node_modules'), 'dir');

  await npm(['pack', '--pack-destination', work], repo);
  const packed = readdirSync(work).filter((name) => name.endsWith('.tgz'));
  expect(packed).toHaveLength(1);
  tarball = join(work, packed[0] as string);

  mkdirSync(app);
  await npm(['init', '-y'], app);
  await npm(['install', tarball, '--no-audit', '--no-fund', '--prefer-offline'], app);
}, SETUP_TIMEOUT);

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('the packed tarball', () => {
  it('carries the build, the license, the docs the README links to, and no tests', () => {
    const files = filesUnder(installed);
    expect(files).toContain('dist/index.js');
    expect(files).toContain('dist/gateway/cli.js');
    expect(files).toContain('LICENSE');
    expect(files.filter((f) => /\.test(-d)?\.|(^|\/)test\//.test(f))).toEqual([]);
    const readme = readFileSync(join(installed, 'README.md'), 'utf8');
    const links = [...readme.matchAll(/\]\((?![a-z][a-z0-9+.-]*:|#)([^)#\s]+)/gi)].map((m) => m[1] as string);
    expect(links.length).toBeGreaterThan(0);
    expect(links.filter((link) => !existsSync(join(installed, link)))).toEqual([]);
  });

  it('has source and declaration maps whose sources are all shipped', () => {
    const maps = filesUnder(installed).filter((f) => f.endsWith('.map'));
    expect(maps.length).toBeGreaterThan(0);
    const missing = maps.flatMap((map) => {
      const { sources } = JSON.parse(readFileSync(join(installed, map), 'utf8')) as { sources: string[] };
      return sources.map((s) => resolve(dirname(join(installed, map)), s)).filter((s) => !existsSync(s));
    });
    expect(missing).toEqual([]);
  });

  it('passes @arethetypeswrong/cli for an ESM-only package', async () => {
    const attw = join(ROOT, 'node_modules', '.bin', 'attw');
    const { stdout } = await run(attw, [tarball, '--profile', 'esm-only', '--format', 'json'], {
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    const { problems = {} } = JSON.parse(stdout) as {
      problems?: Record<string, { kind: string; entrypoint?: string; resolutionKind?: string }[]>;
    };
    // esm-only leaves out node10 and require() from CommonJS (Node ≥ 20.19 can require() it anyway).
    const counted = Object.values(problems)
      .flat()
      .filter((p) => p.resolutionKind !== 'node10' && p.resolutionKind !== 'node16-cjs');
    expect(counted.map((p) => `${p.kind} ${p.entrypoint ?? ''} ${p.resolutionKind ?? ''}`)).toEqual([]);
  }, 60_000);

  it('imports every subpath with only its own dependencies installed', async () => {
    const exportsMap = JSON.parse(readFileSync(join(installed, 'package.json'), 'utf8')).exports as object;
    const subpaths = Object.keys(exportsMap);
    // NestJS's adapter imports @nestjs/common, @nestjs/core and rxjs at run time (decorators,
    // Reflector, operators), which every NestJS app has; every other face loads nothing it lacks.
    const expected: Record<string, string> = Object.fromEntries(subpaths.map((s) => [s, 'ok']));
    expected['./nestjs'] = "ERR_MODULE_NOT_FOUND Cannot find package '@nestjs/common'";
    const script = `
      const out = {};
      for (const subpath of ${JSON.stringify(subpaths)}) {
        const spec = 'idempo' + subpath.slice(1);
        try {
          await import(spec, spec.endsWith('.json') ? { with: { type: 'json' } } : undefined);
          out[subpath] = 'ok';
        } catch (error) {
          out[subpath] = error.code + ' ' + error.message.split(' imported from')[0];
        }
      }
      console.log(JSON.stringify(out));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
      cwd: app,
      env: cleanEnv(),
    });
    expect(JSON.parse(stdout)).toEqual(expected);
  });

  it('works each face that needs nothing more, and names what to install for the others', async () => {
    const script = `
      const { createIdempotency } = await import('idempo');
      const { createSqliteStore } = await import('idempo/sqlite');
      const { createMemoryStore } = await import('idempo/memory');
      const { openStore } = await import('idempo/gateway');
      const { idempotency: fastifyPlugin } = await import('idempo/fastify');
      const out = {};
      const sqlite = createSqliteStore({ path: ':memory:' });
      const idem = createIdempotency({ store: sqlite });
      out.sqlite = typeof idem.handle;
      await sqlite.close();
      out.fastify = fastifyPlugin[Symbol.for('skip-override')] === true ? 'plugin' : 'not a plugin';
      for (const [face, url] of [['redis', 'redis://127.0.0.1:1'], ['postgres', 'postgres://u@127.0.0.1:1/db']]) {
        try { await openStore(url); out[face] = 'opened'; }
        catch (error) { out[face] = error.code + ' ' + error.message; }
      }
      for (const name of ['express', 'hono', 'koa', 'node']) {
        const mod = await import('idempo/' + name);
        out[name] = typeof (mod.idempotency ?? mod.idempotent);
      }
      out.memory = typeof createMemoryStore().claim;
      console.log(JSON.stringify(out));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], {
      cwd: app,
      env: cleanEnv(),
    });
    expect(JSON.parse(stdout)).toEqual({
      sqlite: 'function',
      fastify: 'plugin',
      redis: expect.stringMatching(/^IDEMPO_DEPENDENCY_MISSING .*npm install ioredis/),
      postgres: expect.stringMatching(/^IDEMPO_DEPENDENCY_MISSING .*npm install pg/),
      express: 'function',
      hono: 'function',
      koa: 'function',
      node: 'function',
      memory: 'function',
    });
  });

  it('runs `npx idempo serve` on its default SQLite store, replays a keyed POST, and serves /metrics on --admin-port', async () => {
    const upstream = await startUpstream((_req, res, body) => {
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ got: body.toString() }));
    });
    const port = await freePort();
    const adminPort = await freePort();
    let gateway: ChildProcess | undefined;
    try {
      // Its own process group: npx runs the bin through a shell, and the whole group gets SIGTERM
      // as from a terminal or a service manager, so nothing is left behind whatever happens.
      // --admin-port: prom-client came with the install (an optional dependency), as better-sqlite3 did.
      const args = ['serve', '--upstream', upstream.url, '--port', String(port), '--admin-port', String(adminPort)];
      gateway = spawn('npx', ['idempo', ...args], {
        cwd: app,
        env: cleanEnv(),
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      gateway.stdout?.on('data', (chunk) => {
        output += chunk;
      });
      gateway.stderr?.on('data', (chunk) => {
        output += chunk;
      });
      const exited = new Promise<number | null>((done) => gateway?.once('exit', (code) => done(code)));
      await waitForPort(port, gateway, () => output);

      const send = () =>
        fetch(`http://127.0.0.1:${port}/payments`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'idempotency-key': 'tarball-test-1' },
          body: '{"amount":5}',
        });
      const first = await send();
      expect(first.status).toBe(201);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      const firstBody = await first.text();
      const second = await send();
      expect(second.status).toBe(201);
      expect(second.headers.get('idempotent-replayed')).toBe('true');
      expect(await second.text()).toBe(firstBody);
      expect(upstream.hits).toHaveLength(1);
      expect(existsSync(join(app, 'idempo.db'))).toBe(true);
      const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
      expect(metrics).toContain('idempo_outcomes_total{type="replayed",route=""} 1');
      expect(metrics).toContain('idempo_store_operations_total{operation="claim",store="sqlite",result="acquired"} 1');

      // The whole group gets SIGTERM; the gateway drains (nothing under way) and every process ends.
      const pid = gateway.pid as number;
      process.kill(-pid, 'SIGTERM');
      const deadline = Date.now() + 15_000;
      while (groupAlive(pid) && Date.now() < deadline) await sleep(100);
      expect(groupAlive(pid), `still running 15 s after SIGTERM:\n${output}`).toBe(false);
      await exited;
      expect(gateway.exitCode ?? gateway.signalCode).not.toBeNull();
    } finally {
      if (gateway?.pid && groupAlive(gateway.pid)) process.kill(-gateway.pid, 'SIGKILL');
      await upstream.close();
    }
  }, 60_000);
});

function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitForPort(port: number, child: ChildProcess, output: () => string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`idempo serve exited with ${child.exitCode}:\n${output()}`);
    const open = await new Promise<boolean>((done) => {
      const socket = connect(port, '127.0.0.1');
      socket.setTimeout(1000, () => socket.destroy());
      socket.once('connect', () => {
        done(true);
        socket.destroy();
      });
      socket.once('error', () => undefined).once('close', () => done(false));
    });
    if (open) return;
    await sleep(100);
  }
  throw new Error(`idempo serve did not listen on ${port} within 30 s:\n${output()}`);
}
