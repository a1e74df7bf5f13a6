import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, exitOf, freePort, postJson, ROOT, sleep, startUpstream } from '../helpers/servers.js';

// The gateway as a service: started through npm and npx, stopped by signals sent to npm.
let upstream: Awaited<ReturnType<typeof startUpstream>>;
const dir = mkdtempSync(join(tmpdir(), 'idempo-service-'));

beforeAll(async () => {
  upstream = await startUpstream(async (req, res) => {
    if (req.url?.startsWith('/slow')) await sleep(1_000);
    res.writeHead(201, { 'content-type': 'application/json' }).end('{"ok":true}');
  });
});

afterAll(async () => {
  await upstream.close();
  rmSync(dir, { recursive: true, force: true });
});

/** Spawns `command`, collects its output, and resolves with the pid of the node process that logged "listening". */
async function launch(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; detached?: boolean } = {},
) {
  const child = spawn(command, args, {
    cwd: options.cwd ?? ROOT,
    detached: options.detached ?? false,
    env: { ...process.env, LOG_LEVEL: 'info', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stderr?.on('data', (chunk) => {
    output += chunk;
  });
  const listening = new Promise<{ pid: number; url: string }>((resolve, reject) => {
    child.stdout?.on('data', (chunk: Buffer) => {
      output += chunk;
      for (const line of output.split('\n')) {
        if (!line.includes('"idempo gateway listening"')) continue;
        const entry = JSON.parse(line) as { pid: number; url: string };
        resolve({ pid: entry.pid, url: entry.url });
      }
    });
    child.once('exit', (code) => reject(new Error(`${command} exited with ${code} before listening: ${output}`)));
  });
  return { child, listening: await listening, output: () => output };
}

/**
 * Whether `pid` still runs. A process that exited but that its new parent has not reaped yet (a
 * re-parented CLI's adopter may be slow to, or never, reap it) is a zombie: it still answers
 * kill(pid, 0), so its state is read from /proc.
 */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) state …"; the command may hold spaces and parentheses.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Resolves once `pid` is gone (polling: it is not our child, so no exit event reaches us). */
async function gone(pid: number, withinMs = 20_000): Promise<boolean> {
  const deadline = Date.now() + withinMs;
  while (alive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

async function stopAll(child: ChildProcess, pid: number) {
  if (alive(pid)) process.kill(pid, 'SIGKILL');
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await exitOf(child);
}

describe('signals reach the gateway whoever started it', () => {
  it('npx idempo serve: SIGTERM to npm drains the node process, which exits; no orphan keeps serving', async () => {
    const port = await freePort();
    const { child, listening, output } = await launch('npx', [
      '--no-install',
      'idempo',
      'serve',
      '--upstream',
      upstream.url,
      '--port',
      String(port),
      '--store',
      'memory:',
    ]);
    try {
      expect(listening.pid).not.toBe(child.pid);
      const inflight = postJson(`${listening.url}/slow`, { a: 1 }, 'npx-drain');
      while (!upstream.hits.some((h) => h.url === '/slow')) await sleep(20);
      child.kill('SIGTERM');
      const res = await inflight;
      expect(res.status).toBe(201);
      expect(await gone(listening.pid)).toBe(true);
      expect(output()).toContain('idempo gateway draining');
      expect(output()).toContain('idempo gateway stopped');
      await expect(fetch(`${listening.url}/healthz`)).rejects.toThrow();
    } finally {
      await stopAll(child, listening.pid);
    }
  }, 60_000);

  it('npm start: SIGTERM to npm, or Ctrl-C (SIGINT to its process group), stops the example; a second start replays a payment the API still knows', async () => {
    const env = {
      PORT: String(await freePort()),
      API_PORT: String(await freePort()),
      IDEMPO_STORE: `sqlite:${join(dir, 'idempo.db')}`,
      IDEMPO_EXAMPLE_STATE: join(dir, 'payments.json'),
    };
    // --ignore-scripts skips prestart's build (the tests run on the built dist/), not start itself.
    const first = await launch('npm', ['run', 'start', '--ignore-scripts'], { env });
    let paymentId: string;
    try {
      const res = await postJson(`${first.listening.url}/payments`, { amount: 1200 }, 'npm-start-1');
      expect(res.status).toBe(201);
      paymentId = ((await res.json()) as { id: string }).id;
      first.child.kill('SIGTERM');
      expect(await gone(first.listening.pid)).toBe(true);
      expect(first.output()).toContain('idempo gateway stopped');
    } finally {
      await stopAll(first.child, first.listening.pid);
    }

    const second = await launch('npm', ['run', 'start', '--ignore-scripts'], { env, detached: true });
    try {
      const replay = await postJson(`${second.listening.url}/payments`, { amount: 1200 }, 'npm-start-1');
      expect(replay.headers.get('idempotent-replayed')).toBe('true');
      expect(((await replay.json()) as { id: string }).id).toBe(paymentId);
      // The payment the replay names is one the API knows after its restart.
      const known = await fetch(`${second.listening.url}/payments/${paymentId}`);
      expect(known.status).toBe(200);
      // What a terminal's Ctrl-C does: SIGINT to every process of the foreground group.
      process.kill(-(second.child.pid as number), 'SIGINT');
      expect(await gone(second.listening.pid)).toBe(true);
      expect(second.output()).toContain('idempo gateway stopped');
    } finally {
      await stopAll(second.child, second.listening.pid);
    }
  }, 90_000);

  it('the CLI drains and exits when its parent dies without passing a signal on (SIGKILLed)', async () => {
    // A parent (sh, then exec'd into sleep) that starts the CLI and is killed: the CLI is re-parented.
    const port = await freePort();
    const cli = join(ROOT, 'dist/gateway/cli.js');
    const { child, listening, output } = await launch('sh', [
      '-c',
      `"${process.execPath}" "${cli}" serve --upstream ${upstream.url} --port ${port} --store memory: & exec sleep 1000`,
    ]);
    try {
      child.kill('SIGKILL');
      expect(await gone(listening.pid), output()).toBe(true);
      expect(output()).toContain('idempo gateway stopped');
    } finally {
      await stopAll(child, listening.pid);
    }
  }, 60_000);
});

describe('a gateway whose standard output goes away', () => {
  it('exits when its parent dies and takes the reader of its log with it, instead of hanging on its last lines', async () => {
    // The parent reads the CLI's log through a pipe, says the CLI's pid once it listens, and is
    // SIGKILLed: the CLI is re-parented and its log now goes nowhere (EPIPE). It used to stop
    // listening, then hang for ever in pino's flush at exit, retrying the write.
    const script = `
      const { spawn } = require('node:child_process');
      const child = spawn(process.execPath, [${JSON.stringify(CLI)}, 'serve', '--upstream', ${JSON.stringify(upstream.url)}, '--port', '0', '--store', 'memory:'], { stdio: ['ignore', 'pipe', 'pipe'] });
      child.stdout.once('data', () => {
        process.stdout.write(child.pid + '\\n', () => process.kill(process.pid, 'SIGKILL'));
      });`;
    const parent = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    parent.stdout.on('data', (chunk) => {
      out += chunk;
    });
    await exitOf(parent);
    const pid = Number(out.trim());
    expect(pid).toBeGreaterThan(0);
    try {
      expect(await gone(pid, 10_000)).toBe(true);
    } finally {
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
  }, 30_000);
});

describe('the demo and the example API', () => {
  it('npm run demo -- --help prints the usage; --drop-rate 2 is refused in one line', () => {
    const help = spawnSync(process.execPath, ['examples/client/run.js', '--help'], { cwd: ROOT, encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toMatch(/--drop-rate R/);
    const bad = spawnSync(process.execPath, ['examples/client/run.js', '--drop-rate', '2'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(bad.status).toBe(2);
    expect(bad.stderr.split('\n')[0]).toBe('demo: --drop-rate "2": expected a number from 0 to 1.');
  });

  it.each([
    [['--operations', '0'], 'demo: --operations "0": expected an integer from 1 to 100000.'],
    [['--seed', 'x'], 'demo: --seed "x": expected an integer from 0 to 2147483647.'],
    [['--retries', '1.5'], 'demo: --retries "1.5": expected an integer from 0 to 100.'],
    [['--drop-rate', '-0.1'], 'demo: --drop-rate "-0.1": expected a number from 0 to 1.'],
    [['--bogus'], "demo: Unknown option '--bogus'"],
  ])('npm run demo -- %j is refused in one line, before anything starts', (args, line) => {
    const out = spawnSync(process.execPath, ['examples/client/run.js', ...args], { cwd: ROOT, encoding: 'utf8' });
    expect(out.status).toBe(2);
    expect(out.stderr.split('\n')[0]).toBe(line);
    expect(out.stdout).toBe('');
  });
});
