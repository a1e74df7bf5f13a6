/**
 * Starts real, private Redis servers for tests, from the `redis-server` binary on free ports:
 * a standalone server a test may kill, pause and restart, and a Cluster of masters, with or
 * without replicas.
 * Everything runs in a temp directory removed on stop. The shared server at 6379 is never touched.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './ports.js';

export { freePort };

const run = promisify(execFile);
const HOST = '127.0.0.1';

/** A redis-server process this test owns. */
export interface RedisServer {
  readonly host: string;
  readonly port: number;
  /** Its working directory (AOF/RDB files, log). */
  readonly dir: string;
  /** Whether the process is running. */
  readonly running: boolean;
  /** Kills the process at once (SIGKILL): an outage, not a shutdown. Resolves once it has exited. */
  kill(): Promise<void>;
  /** Freezes the process (SIGSTOP): a stall (GC, VM pause, partition), not a crash. */
  pause(): void;
  /** Lets a paused process go on (SIGCONT). */
  resume(): void;
  /** Starts the server again on the same port and directory; resolves when it answers PING. */
  restart(): Promise<void>;
  /** Stops the server (SIGTERM, SIGKILL after 3 s) and removes its directory. */
  stop(): Promise<void>;
}

/** A Redis Cluster this test owns. */
export interface RedisCluster {
  /** Startup nodes for `new Cluster(nodes)`. */
  readonly nodes: { host: string; port: number }[];
  readonly servers: readonly RedisServer[];
  /** The server on `port`. */
  server(port: number): RedisServer;
  /** The nodes as some live node sees them now: port, role, and (replicas) their master's port. */
  topology(): Promise<ClusterNode[]>;
  /** Stops every node and removes their directories. */
  stop(): Promise<void>;
}

/** One line of `CLUSTER NODES`. */
export interface ClusterNode {
  id: string;
  port: number;
  role: 'master' | 'replica';
  /** A replica's master's port; a master's own. */
  masterPort: number;
  /** Flagged failed or unreachable by the node asked. */
  failing: boolean;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Sends one inline command over a raw socket and returns the raw reply (no client library). */
export function rawCommand(port: number, command: string, timeoutMs = 500): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ host: HOST, port });
    let data = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('timeout'));
    }, timeoutMs);
    socket.once('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      data += chunk.toString('utf8');
      const bulk = /^\$(\d+)\r\n/.exec(data);
      const complete = bulk ? Buffer.byteLength(data) >= bulk[0].length + Number(bulk[1]) + 2 : data.endsWith('\r\n');
      if (complete) {
        clearTimeout(timer);
        socket.end();
        resolve(data);
      }
    });
  });
}

async function waitForPing(port: number, child: ChildProcess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`redis-server on ${port} exited with ${child.exitCode}`);
    try {
      if ((await rawCommand(port, 'PING')).startsWith('+PONG')) return;
    } catch {
      // not up yet
    }
    await sleep(30);
  }
  throw new Error(`redis-server on ${port} did not answer PING within ${timeoutMs} ms`);
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/**
 * Starts a private redis-server on a free port (or `port`), persistence off unless `args` turn it
 * on, e.g. `['--appendonly', 'yes', '--appendfsync', 'always']` for a server that keeps its keys
 * across {@link RedisServer.kill} and {@link RedisServer.restart}.
 */
export async function startRedisServer(
  options: { port?: number; args?: string[]; bus?: boolean; dir?: string } = {},
): Promise<RedisServer> {
  const port = options.port ?? (await freePort({ bus: options.bus ?? false }));
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), `idempo-redis-${port}-`)));
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
    '--appendonly',
    'no',
    ...(options.args ?? []),
  ];
  let child: ChildProcess;

  async function launch(): Promise<void> {
    child = spawn('redis-server', args, { stdio: 'ignore' });
    child.once('error', () => {});
    await waitForPing(port, child);
  }

  await launch();
  return {
    host: HOST,
    port,
    dir,
    get running() {
      return child.exitCode === null && child.signalCode === null;
    },
    async kill() {
      child.kill('SIGCONT'); // a paused process dies only once it runs again
      child.kill('SIGKILL');
      await exited(child);
    },
    pause() {
      child.kill('SIGSTOP');
    },
    resume() {
      child.kill('SIGCONT');
    },
    restart: launch,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3_000);
        await exited(child);
        clearTimeout(timer);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Parses `CLUSTER NODES`. */
export function parseClusterNodes(text: string): ClusterNode[] {
  const lines = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^[0-9a-f]{40} /.test(line));
  const nodes = lines.map((line) => {
    const [id = '', address = '', flags = '', master = ''] = line.split(' ');
    return {
      id,
      port: Number(/:(\d+)@/.exec(address)?.[1] ?? 0),
      role: flags.includes('master') ? ('master' as const) : ('replica' as const),
      masterId: master,
      failing: /fail|noaddr/.test(flags),
    };
  });
  const portOf = new Map(nodes.map((node) => [node.id, node.port]));
  return nodes.map(({ masterId, ...node }) => ({
    ...node,
    masterPort: node.role === 'master' ? node.port : (portOf.get(masterId) ?? 0),
  }));
}

/**
 * Starts a Redis Cluster of `masters` masters, each with `replicas` replicas, on free ports: each
 * node with `cluster-enabled yes` and its own `cluster-config-file` in a temp directory, joined
 * with `redis-cli --cluster create`, and resolved once every node reports `cluster_state:ok` and
 * every replica is in sync with its master. `args` go to every node (e.g. a shorter
 * `--cluster-node-timeout`, or AOF).
 */
export async function startRedisCluster({
  masters = 3,
  replicas = 0,
  args = [],
}: {
  masters?: number;
  replicas?: number;
  args?: string[];
} = {}): Promise<RedisCluster> {
  const servers: RedisServer[] = [];
  const total = masters * (1 + replicas);
  try {
    for (let i = 0; i < total; i++) {
      const port = await freePort({ bus: true });
      servers.push(
        await startRedisServer({
          port,
          args: [
            '--cluster-enabled',
            'yes',
            '--cluster-config-file',
            `nodes-${port}.conf`,
            '--cluster-node-timeout',
            '2000',
            ...args,
          ],
        }),
      );
    }
    await run('redis-cli', [
      '--cluster',
      'create',
      ...servers.map((s) => `${HOST}:${s.port}`),
      '--cluster-replicas',
      String(replicas),
      '--cluster-yes',
    ]);
    const deadline = Date.now() + 30_000;
    for (const server of servers) {
      for (;;) {
        const info = await rawCommand(server.port, 'CLUSTER INFO').catch(() => '');
        const replication = await rawCommand(server.port, 'INFO replication').catch(() => '');
        const synced = !replication.includes('role:slave') || replication.includes('master_link_status:up');
        if (info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${total}`) && synced) break;
        if (Date.now() > deadline) throw new Error(`cluster node ${server.port} never reached cluster_state:ok`);
        await sleep(50);
      }
    }
  } catch (error) {
    await Promise.all(servers.map((s) => s.stop()));
    throw error;
  }
  return {
    nodes: servers.map((s) => ({ host: s.host, port: s.port })),
    servers,
    server(port: number) {
      const found = servers.find((s) => s.port === port);
      if (!found) throw new Error(`no cluster node on ${port}`);
      return found;
    },
    async topology() {
      for (const server of servers) {
        const text = await rawCommand(server.port, 'CLUSTER NODES', 300).catch(() => '');
        if (text) return parseClusterNodes(text);
      }
      throw new Error('no cluster node answers CLUSTER NODES');
    },
    async stop() {
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}
