/**
 * Starts a real, private PostgreSQL cluster for tests that must stop and restart the server: initdb
 * into a temp directory, pg_ctl on a free port, a socket in that directory. The shared server at
 * 5432 is never touched. PostgreSQL refuses to run as root, so when the tests run as root every
 * binary runs as the `postgres` OS user (`runuser`), in a directory that user owns.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.js';

const run = promisify(execFile);
const HOST = '127.0.0.1';

/** A PostgreSQL cluster this test owns. */
export interface PostgresCluster {
  readonly host: string;
  readonly port: number;
  /** Its temp directory: data, socket and log. */
  readonly dir: string;
  /** Connection settings for `new pg.Pool(...)`: trust auth, superuser `postgres`, database `postgres`. */
  readonly connection: { host: string; port: number; user: string; database: string };
  /** Whether the server is running. */
  readonly running: boolean;
  /** `pg_ctl stop`: `'immediate'` is a crash (no checkpoint, connections cut), `'fast'` a clean shutdown. */
  stop(mode?: 'immediate' | 'fast'): Promise<void>;
  /** Starts the server again on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Stops the server if it runs and removes its directory. */
  destroy(): Promise<void>;
}

/** The newest installed PostgreSQL's bin directory (Debian layout), or `$PG_BIN`. */
function binDir(): string {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const root = '/usr/lib/postgresql';
  const versions = existsSync(root)
    ? readdirSync(root)
        .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (versions.length === 0)
    throw new Error('no PostgreSQL server binaries found under /usr/lib/postgresql (set PG_BIN)');
  return join(root, versions[0] as string, 'bin');
}

const asRoot = process.getuid?.() === 0;

/** Runs a PostgreSQL binary, as the `postgres` user when we are root. */
async function pgBin(name: string, args: string[], timeout = 60_000): Promise<string> {
  const bin = join(binDir(), name);
  const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  try {
    const { stdout } = await run(file, argv, { timeout, cwd: '/' });
    return stdout;
  } catch (error) {
    const { stderr, stdout } = error as { stderr?: string; stdout?: string };
    throw new Error(`${name} ${args.join(' ')} failed: ${stderr || stdout || String(error)}`);
  }
}

async function postgresOwner(): Promise<{ uid: number; gid: number }> {
  const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * Creates and starts a throwaway cluster.
 *
 * @example
 * ```ts
 * const cluster = await startPostgresCluster();
 * const pool = new pg.Pool({ ...cluster.connection, connectionTimeoutMillis: 1_000 });
 * await cluster.stop('immediate'); // outage
 * await cluster.start();           // back
 * await cluster.destroy();
 * ```
 */
export async function startPostgresCluster(): Promise<PostgresCluster> {
  const dir = await ownedTempDir('idempo-pg-');
  const data = join(dir, 'data');
  await pgBin('initdb', ['-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--locale=C', '--no-sync']);
  return serve(dir, data, await freePort());
}

/** A streaming standby of a {@link PostgresCluster}, which a test may promote. */
export interface PostgresStandby extends PostgresCluster {
  /** The `application_name` it connects to its primary with, for `synchronous_standby_names`. */
  readonly name: string;
  /** `pg_ctl promote`: it stops following the primary and accepts writes. */
  promote(): Promise<void>;
}

/**
 * Starts a streaming standby of `primary`: `pg_basebackup -R` (which writes `standby.signal` and
 * `primary_conninfo`, here with `application_name=<name>`) into a temp directory, then the server
 * on a free port; resolves once the primary reports it streaming. Whether the primary waits for
 * it is the primary's `synchronous_standby_names`; see {@link makeSynchronous}.
 */
export async function startStandby(primary: PostgresCluster, name = 'standby1'): Promise<PostgresStandby> {
  const dir = await ownedTempDir('idempo-pg-standby-');
  const data = join(dir, 'data');
  const conninfo = `host=${HOST} port=${primary.port} user=postgres application_name=${name}`;
  await pgBin('pg_basebackup', ['-D', data, '-d', conninfo, '-R', '-X', 'stream', '--no-sync']);
  const standby = await serve(dir, data, await freePort());
  const deadline = Date.now() + 20_000;
  while (
    !(
      await psql(
        primary,
        `SELECT 1 FROM pg_stat_replication WHERE application_name = '${name}' AND state = 'streaming'`,
      )
    ).includes('1')
  ) {
    if (Date.now() > deadline) throw new Error(`standby ${name} never streamed from the primary`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return Object.assign(standby, {
    name,
    async promote() {
      await pgBin('pg_ctl', ['-D', data, '-w', '-t', '60', 'promote']);
    },
  });
}

/** Makes `primary` wait for `standby` at commit (`synchronous_standby_names`, reloaded). */
export async function makeSynchronous(primary: PostgresCluster, standby: PostgresStandby): Promise<void> {
  await psql(primary, `ALTER SYSTEM SET synchronous_standby_names = '${standby.name}'`);
  await psql(primary, 'SELECT pg_reload_conf()');
  const deadline = Date.now() + 20_000;
  while (
    !(
      await psql(primary, `SELECT sync_state FROM pg_stat_replication WHERE application_name = '${standby.name}'`)
    ).includes('sync')
  ) {
    if (Date.now() > deadline) throw new Error(`standby ${standby.name} never became synchronous`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Runs one statement with psql as `postgres`; its unaligned output. */
export function psql(cluster: PostgresCluster, sql: string): Promise<string> {
  return pgBin(
    'psql',
    ['-h', HOST, '-p', String(cluster.port), '-U', 'postgres', '-d', 'postgres', '-At', '-c', sql],
    30_000,
  );
}

async function ownedTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  if (asRoot) {
    const { uid, gid } = await postgresOwner();
    await chown(dir, uid, gid);
  }
  return dir;
}

/** The server of `data` on `port`, started. */
async function serve(dir: string, data: string, port: number): Promise<PostgresCluster> {
  const log = join(dir, 'server.log');
  let running = false;

  const serverOptions = [
    `-p ${port}`,
    `-k ${dir}`,
    `-c listen_addresses=${HOST}`,
    // Durability against power loss is not the point of a test cluster, so no fsync; commits are
    // still written to the OS before they return (synchronous_commit stays on), so an immediate
    // stop (a crash of the server, not of the machine) keeps every committed row.
    '-c fsync=off',
    '-c full_page_writes=off',
    '-c max_connections=60',
    '-c shared_buffers=16MB',
  ].join(' ');

  const cluster: PostgresCluster = {
    host: HOST,
    port,
    dir,
    connection: { host: HOST, port, user: 'postgres', database: 'postgres' },
    get running() {
      return running;
    },
    async start() {
      try {
        await pgBin('pg_ctl', ['-D', data, '-l', log, '-o', serverOptions, '-w', '-t', '60', 'start']);
      } catch (error) {
        // pg_ctl only says "examine the log output", and the log goes with the temp directory.
        const tail = await readFile(log, 'utf8').then((text) => text.split('\n').slice(-15).join('\n'), String);
        throw new Error(`${(error as Error).message}\nserver.log:\n${tail}`, { cause: error });
      }
      running = true;
    },
    async stop(mode = 'immediate') {
      await pgBin('pg_ctl', ['-D', data, '-m', mode, '-w', '-t', '60', 'stop']);
      running = false;
    },
    async destroy() {
      if (running) await cluster.stop('immediate').catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    await cluster.start();
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
  return cluster;
}
