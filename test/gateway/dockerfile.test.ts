import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, exitOf, freePort, ROOT, sleep, spawnGateway, startUpstream } from '../helpers/servers.js';

// The Dockerfile's promises, checked without a Docker daemon: its HEALTHCHECK command run as the
// image would run it, and the CLI as PID 1 (in a PID namespace of its own, as in a container),
// where a signal with no handler does nothing at all.
const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
/** The image's last stage: what runs. */
const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '));
let upstream: Awaited<ReturnType<typeof startUpstream>>;

beforeAll(async () => {
  upstream = await startUpstream((_req, res) => void res.writeHead(201).end('{}'));
});
afterAll(() => upstream.close());

/** Whether this machine can start a process in a new PID namespace (Linux, as root). */
const canUnshare = (() => {
  const probe = spawnSync('unshare', ['--pid', '--fork', '--mount-proc', 'true'], { timeout: 5_000 });
  return probe.status === 0;
})();

describe('the Dockerfile', () => {
  it('runs a small Node base as a non-root user, with the CLI itself as the entry point', () => {
    expect(runtime).toMatch(/^\nFROM node:\d+-[a-z]+-slim\n/);
    expect(runtime).toMatch(/\nUSER node\n/);
    expect(runtime).toMatch(/\nENTRYPOINT \["node", "dist\/gateway\/cli\.js"\]\n/);
    expect(runtime).toMatch(/\nHEALTHCHECK /);
    expect(runtime).toMatch(/IDEMPO_HOST=0\.0\.0\.0/);
  });

  it('has a HEALTHCHECK command that passes on a healthy gateway and fails while the store is unreachable', async () => {
    const command = JSON.parse(/\n\s+CMD (\[.*\])\n/.exec(runtime)?.[1] ?? 'null') as string[];
    expect(command[0]).toBe('node');
    const healthy = await spawnGateway(['--upstream', upstream.url, '--port', '0', '--store', 'memory:']);
    const down = await spawnGateway([
      '--upstream',
      upstream.url,
      '--port',
      '0',
      '--store',
      'postgres://postgres@127.0.0.1:1/test',
    ]);
    try {
      const check = (url: string) =>
        spawnSync(process.execPath, command.slice(1), {
          env: { ...process.env, IDEMPO_PORT: new URL(url).port },
          timeout: 10_000,
        }).status;
      expect(check(healthy.url)).toBe(0);
      expect(check(down.url)).toBe(1);
    } finally {
      healthy.child.kill('SIGTERM');
      down.child.kill('SIGTERM');
      await Promise.all([healthy.exited, down.exited]);
    }
  });

  it.skipIf(!canUnshare)('the CLI as PID 1 drains and exits 0 on SIGTERM, with no init in front of it', async () => {
    const port = await freePort();
    const child = spawn(
      'unshare',
      [
        '--pid',
        '--fork',
        '--mount-proc',
        '--kill-child',
        process.execPath,
        CLI,
        'serve',
        '--upstream',
        upstream.url,
        '--port',
        String(port),
        '--store',
        'memory:',
      ],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LOG_LEVEL: 'info' } },
    );
    let output = '';
    child.stdout.on('data', (chunk) => {
      output += chunk;
    });
    child.stderr.on('data', (chunk) => {
      output += chunk;
    });
    try {
      while (!output.includes('idempo gateway listening')) {
        if (child.exitCode !== null) throw new Error(`exited before listening:\n${output}`);
        await sleep(50);
      }
      expect(JSON.parse(output.split('\n').find((l) => l.includes('listening')) as string).pid).toBe(1);
      // The node process is unshare's only child; SIGTERM goes to it, as `docker stop` sends it to PID 1.
      const pid = Number(
        execFileSync('cat', [`/proc/${child.pid}/task/${child.pid}/children`], { encoding: 'utf8' }).trim(),
      );
      process.kill(pid, 'SIGTERM');
      const deadline = Date.now() + 10_000;
      while (child.exitCode === null && Date.now() < deadline) await sleep(50);
      expect(output).toContain('idempo gateway stopped');
      expect(await exitOf(child)).toEqual({ code: 0, signal: null });
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
    }
  });
});
