// Failover chaos: a private Redis Cluster of 3 masters, each with one replica, and the faults that
// make a replica take over (or make WAIT count short). Every process goes through procs.js, so
// cleanupAll ends them all; a paused node is SIGKILLed like any other.
//
// Faults, each on one master chosen at random (and its replica):
// - kill:          SIGKILL the master, restart it `restartAfterMs` later (it rejoins with its AOF).
// - pause:         SIGSTOP the master until its replica reports itself master, then SIGCONT: the
//                  old master runs the commands queued on its sockets before it learns it was replaced.
// - failover:      CLUSTER FAILOVER on the replica (graceful: the master stops writes, the replica
//                  catches up, then takes over).
// - replica-stall: SIGSTOP the replica for `storeDownMs`, then SIGCONT: no failover, but the
//                  master's WAIT counts 0 meanwhile.
import { execFile } from 'node:child_process';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort, HOST, killHard, sleep, spawnTracked, tempDir, waitForPort } from './procs.js';

const run = promisify(execFile);

/** One inline command over a raw socket; the raw reply. */
export function redisCommand(port, command, timeoutMs = 500) {
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
      const done = bulk ? Buffer.byteLength(data) >= bulk[0].length + Number(bulk[1]) + 2 : data.endsWith('\r\n');
      if (done) {
        clearTimeout(timer);
        socket.end();
        resolve(data);
      }
    });
  });
}

/** `CLUSTER NODES` as { id, port, role, masterPort, failing }. */
function parseNodes(text) {
  const nodes = text
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => /^[0-9a-f]{40} /.test(line))
    .map((line) => {
      const [id, address, flags, master] = line.split(' ');
      return {
        id,
        port: Number(/:(\d+)@/.exec(address)?.[1] ?? 0),
        role: flags.includes('master') ? 'master' : 'replica',
        masterId: master,
        failing: /fail|noaddr/.test(flags),
      };
    });
  const portOf = new Map(nodes.map((n) => [n.id, n.port]));
  return nodes.map((n) => ({ ...n, masterPort: n.role === 'master' ? n.port : (portOf.get(n.masterId) ?? 0) }));
}

export async function startRedisCluster({ masters = 3, nodeTimeoutMs = 1_500 } = {}) {
  const nodes = [];
  for (let i = 0; i < masters * 2; i++) {
    const port = await freePort({ bus: true });
    const dir = tempDir(`idempo-chaos-cluster-${port}-`);
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
      'yes',
      '--appendfsync',
      'everysec',
      '--cluster-enabled',
      'yes',
      '--cluster-config-file',
      `nodes-${port}.conf`,
      '--cluster-node-timeout',
      String(nodeTimeoutMs),
    ];
    const node = {
      port,
      child: undefined,
      async start() {
        node.child = spawnTracked('redis-server', args, { stdio: 'ignore' });
        await waitForPort(port, 10_000, node.child);
      },
    };
    await node.start();
    nodes.push(node);
  }
  await run('redis-cli', [
    '--cluster',
    'create',
    ...nodes.map((n) => `${HOST}:${n.port}`),
    '--cluster-replicas',
    '1',
    '--cluster-yes',
  ]);

  async function topology() {
    for (const node of nodes) {
      const text = await redisCommand(node.port, 'CLUSTER NODES', 300).catch(() => '');
      if (text) return parseNodes(text);
    }
    throw new Error('no cluster node answers');
  }

  /** Every node up, the cluster ok everywhere, each master with one replica in sync. */
  async function settled(timeoutMs = 60_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      let ok = true;
      for (const node of nodes) {
        const info = await redisCommand(node.port, 'CLUSTER INFO', 300).catch(() => '');
        const repl = await redisCommand(node.port, 'INFO replication', 300).catch(() => '');
        if (!info.includes('cluster_state:ok')) ok = false;
        if (repl.includes('role:slave') && !repl.includes('master_link_status:up')) ok = false;
        if (!ok) break;
      }
      if (ok) {
        const nodesNow = await topology().catch(() => []);
        const mastersNow = nodesNow.filter((n) => n.role === 'master' && !n.failing);
        const replicasNow = nodesNow.filter((n) => n.role === 'replica' && !n.failing);
        if (mastersNow.length === masters && replicasNow.length === masters) return;
      }
      if (Date.now() > deadline) throw new Error('cluster did not settle');
      await sleep(100);
    }
  }

  async function promoted(replicaPort, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const repl = await redisCommand(replicaPort, 'INFO replication', 300).catch(() => '');
      if (repl.includes('role:master')) return true;
      await sleep(50);
    }
    return false;
  }

  await settled();
  const byPort = (port) => nodes.find((n) => n.port === port);

  return {
    kind: 'redis-cluster',
    url: `redis-cluster://${nodes.map((n) => `${HOST}:${n.port}`).join(',')}`,
    running: true,
    outages: true,
    nodes,
    topology,
    settled,
    /**
     * Runs one fault on a master chosen with `random`; resolves with its window: `start` (the
     * fault), `promotedAt` (the replica took over, if it did), `end` (the cluster healthy again).
     */
    async fault(kind, random, { restartAfterMs = 500, stallMs = 3_000 } = {}) {
      const now = await topology();
      const shards = now.filter((n) => n.role === 'master');
      const master = shards[Math.floor(random() * shards.length)];
      const replica = now.find((n) => n.role === 'replica' && n.masterPort === master.port);
      const event = {
        kind,
        master: master.port,
        replica: replica?.port,
        start: Date.now(),
        promotedAt: null,
        end: null,
      };
      if (kind === 'kill') {
        await killHard(byPort(master.port).child);
        await sleep(restartAfterMs);
        await byPort(master.port).start();
        if (await promoted(replica.port, 6_000)) event.promotedAt = Date.now();
      } else if (kind === 'pause') {
        byPort(master.port).child.kill('SIGSTOP');
        try {
          if (await promoted(replica.port)) event.promotedAt = Date.now();
        } finally {
          byPort(master.port).child.kill('SIGCONT');
        }
      } else if (kind === 'failover') {
        await redisCommand(replica.port, 'CLUSTER FAILOVER', 2_000);
        if (await promoted(replica.port, 10_000)) event.promotedAt = Date.now();
      } else if (kind === 'replica-stall') {
        byPort(replica.port).child.kill('SIGSTOP');
        await sleep(stallMs);
        byPort(replica.port).child.kill('SIGCONT');
      } else throw new Error(`unknown fault ${kind}`);
      event.released = Date.now();
      await settled();
      event.end = Date.now();
      return event;
    },
  };
}
