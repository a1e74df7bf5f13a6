// Every process and directory the chaos harness starts goes through this file, so that one call
// (cleanupAll) ends them: on success, on failure, and on SIGINT/SIGTERM of the runner. The shared
// Redis (6379) and PostgreSQL (5432) are never touched: stores run privately on free ports in
// temp directories, the way test/helpers/redis-cluster.ts and postgres-cluster.ts do it.
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { chown } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { freePort } from '../helpers/ports.js';

export { freePort };

const run = promisify(execFile);
export const HOST = '127.0.0.1';
export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Children we spawned (live ones), temp dirs we made, PostgreSQL data dirs we run. */
const children = new Set();
const dirs = new Set();
const pgDataDirs = new Set();

/** A temp directory removed by cleanupAll. */
export function tempDir(prefix) {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  dirs.add(dir);
  return dir;
}

/** Spawns a tracked child; it is SIGKILLed by cleanupAll if still alive. */
export function spawnTracked(file, args, options = {}) {
  const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'], ...options });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', () => children.delete(child));
  child.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => resolve({ code: null, signal: null, error }));
  });
  return child;
}

/** SIGKILLs a child we spawned and waits for it to be gone. */
export async function killHard(child) {
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await child.exited;
}

/** Reads a child's stdout line by line. */
export function onLines(stream, onLine) {
  let buffer = '';
  stream.on('data', (chunk) => {
    buffer += chunk.toString('utf8');
    let newline = buffer.indexOf('\n');
    while (newline !== -1) {
      onLine(buffer.slice(0, newline));
      buffer = buffer.slice(newline + 1);
      newline = buffer.indexOf('\n');
    }
  });
}

/** Waits until `port` accepts TCP connections, or throws after `timeoutMs`. */
export async function waitForPort(port, timeoutMs, child) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null))
      throw new Error(`process exited (${child.exitCode ?? child.signalCode}) before listening on ${port}`);
    const ok = await new Promise((resolve) => {
      const socket = createConnection({ host: HOST, port });
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (ok) return;
    await sleep(25);
  }
  throw new Error(`nothing listening on ${port} after ${timeoutMs} ms`);
}

// ---------------------------------------------------------------------------------------------
// Private Redis: a redis-server we kill with SIGKILL and start again on the same port and dir.
// Persistence is on (AOF, fsync always, in its temp dir) so that a crash of the server is an
// outage and not a wipe: without it every SIGKILL would forget every key, and each retry after
// it would be a fresh first request that no idempotency layer could tell from a new one.

export async function startRedis({ persistent = true } = {}) {
  const port = await freePort();
  const dir = tempDir(`idempo-chaos-redis-${port}-`);
  const args = [
    '--port',
    String(port),
    '--bind',
    HOST,
    '--protected-mode',
    'no',
    '--daemonize',
    'no',
    '--dir',
    dir,
    '--logfile',
    join(dir, 'redis.log'),
    '--save',
    '',
    ...(persistent ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']),
  ];
  let child;
  const redis = {
    kind: 'redis',
    url: `redis://${HOST}:${port}`,
    port,
    dir,
    get running() {
      return child !== undefined && child.exitCode === null && child.signalCode === null;
    },
    async start() {
      child = spawnTracked('redis-server', args, { stdio: 'ignore' });
      await waitForPort(port, 10_000, child);
    },
    /** SIGKILL: an outage, not a shutdown. */
    async stopHard() {
      if (child) await killHard(child);
    },
    async destroy() {
      if (child) await killHard(child);
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
  await redis.start();
  return redis;
}

// ---------------------------------------------------------------------------------------------
// Private PostgreSQL: initdb in a temp dir, pg_ctl on a free port; `stop -m immediate` is a crash.

function pgBinDir() {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0) throw new Error('no PostgreSQL server binaries under /usr/lib/postgresql (set PG_BIN)');
  return join(root, versions[0], 'bin');
}

const asRoot = process.getuid?.() === 0;

/** Runs a PostgreSQL binary (as the `postgres` OS user when we are root); its standard output. */
export async function pgBin(name, args, timeout = 60_000) {
  const bin = join(pgBinDir(), name);
  const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  try {
    const { stdout } = await run(file, argv, { timeout, cwd: '/' });
    return stdout;
  } catch (error) {
    throw new Error(`${name} ${args.join(' ')} failed: ${error.stderr || error.stdout || String(error)}`);
  }
}

/** A temp directory (removed by cleanupAll) that the PostgreSQL binaries may write to. */
export async function postgresTempDir(prefix) {
  const dir = tempDir(prefix);
  if (asRoot) {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
    await chown(dir, Number(uid.stdout.trim()), Number(gid.stdout.trim()));
  }
  return dir;
}

/**
 * The server of the data directory `data` (in `dir`, which holds its socket and log) on `port`,
 * not started. Tracked while it runs, so cleanupAll stops it.
 */
export function servePostgres(dir, data, port) {
  const log = join(dir, 'server.log');
  const serverOptions = [
    `-p ${port}`,
    `-k ${dir}`,
    `-c listen_addresses=${HOST}`,
    // A crash of the server, not of the machine: commits still reach the OS before they return.
    '-c fsync=off',
    '-c full_page_writes=off',
    '-c max_connections=100',
    '-c shared_buffers=16MB',
  ].join(' ');
  let running = false;
  const pg = {
    kind: 'postgres',
    url: `postgres://postgres@${HOST}:${port}/postgres`,
    port,
    dir,
    data,
    get running() {
      return running;
    },
    async start() {
      pgDataDirs.add(data);
      await pgBin('pg_ctl', ['-D', data, '-l', log, '-o', serverOptions, '-w', '-t', '60', 'start']);
      running = true;
    },
    async stopHard() {
      await pgBin('pg_ctl', ['-D', data, '-m', 'immediate', '-w', '-t', '60', 'stop']);
      running = false;
      pgDataDirs.delete(data);
    },
    /**
     * A crash of the whole server at one instant, as of its machine: every process of it (the
     * postmaster and each backend, which PostgreSQL puts in sessions of their own, so no process
     * group reaches them all) is SIGSTOPped, then SIGKILLed. Nothing it does after the first
     * signal reaches a client or a standby. Its data directory stays as the crash left it.
     */
    async crash() {
      const pids = postgresPids(data);
      for (const pid of pids) signal(pid, 'SIGSTOP');
      // Forked between the listing and the stop: stopped now, since the postmaster is.
      const all = [...new Set([...pids, ...postgresPids(data)])];
      for (const pid of all) signal(pid, 'SIGKILL');
      const deadline = Date.now() + 10_000;
      while (all.some(alive)) {
        if (Date.now() > deadline) throw new Error(`PostgreSQL on ${port} still alive 10 s after SIGKILL`);
        await sleep(10);
      }
      running = false;
      pgDataDirs.delete(data);
    },
    async destroy() {
      if (running) await pg.stopHard().catch(() => {});
      pgDataDirs.delete(data);
      rmSync(dir, { recursive: true, force: true });
      dirs.delete(dir);
    },
  };
  return pg;
}

/** The postmaster of `data` (from its postmaster.pid) and its children (from /proc). */
function postgresPids(data) {
  let postmaster;
  try {
    postmaster = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return [];
  }
  if (!(postmaster > 0) || !alive(postmaster)) return [];
  const children = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Fields after the command name, which ends at the last ')': state, ppid, …
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === postmaster) children.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return [postmaster, ...children];
}

function signal(pid, name) {
  try {
    process.kill(pid, name);
  } catch {
    // already gone
  }
}

/** Whether `pid` runs (a zombie, killed but not yet reaped by its parent, does not). */
function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

export async function startPostgres() {
  const dir = await postgresTempDir('idempo-chaos-pg-');
  const data = join(dir, 'data');
  await pgBin('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  const pg = servePostgres(dir, data, await freePort());
  await pg.start();
  return pg;
}

/** Synchronous last resort for PostgreSQL: SIGQUIT (immediate shutdown) to the postmaster. */
function stopPostgresSync(data) {
  try {
    const pid = Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]);
    if (pid > 0) process.kill(pid, 'SIGQUIT');
  } catch {
    // not running
  }
}

/** Ends every child, stops every PostgreSQL cluster and removes every temp dir we made. */
export async function cleanupAll() {
  for (const child of children) child.kill('SIGKILL');
  await Promise.all(
    [...pgDataDirs].map((data) =>
      pgBin('pg_ctl', ['-D', data, '-m', 'immediate', '-w', '-t', '20', 'stop'], 25_000).catch(() =>
        stopPostgresSync(data),
      ),
    ),
  );
  pgDataDirs.clear();
  await Promise.all([...children].map((child) => child.exited));
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  dirs.clear();
}

/** Synchronous cleanup for process 'exit': kills what is left without waiting. */
export function cleanupSync() {
  for (const child of children) child.kill('SIGKILL');
  for (const data of pgDataDirs) stopPostgresSync(data);
  for (const dir of dirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort at exit
    }
  }
}

let installed = false;
/** Cleans up on SIGINT/SIGTERM (then exits 130/143) and, as a last resort, at exit. */
export function installCleanupHandlers() {
  if (installed) return;
  installed = true;
  const onSignal = (signal, code) => {
    process.stderr.write(`\nchaos: ${signal}, stopping every process it started…\n`);
    const force = setTimeout(() => {
      cleanupSync();
      process.exit(code);
    }, 15_000);
    cleanupAll().finally(() => {
      clearTimeout(force);
      process.exit(code);
    });
  };
  process.once('SIGINT', () => onSignal('SIGINT', 130));
  process.once('SIGTERM', () => onSignal('SIGTERM', 143));
  process.once('exit', cleanupSync);
}
