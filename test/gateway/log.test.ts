import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

const LOG_MODULE = JSON.stringify(`${ROOT}dist/gateway/log.js`);

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/**
 * Runs `body` in a node process with the gateway's default logger as `log` and `fs` at hand, its
 * standard output sent to a file (`OUT` in the script) so the script can see what is written when.
 */
async function runWithLogger(body: string, stdout: 'file' | 'closed-pipe' = 'file') {
  const dir = mkdtempSync(join(tmpdir(), 'idempo-log-'));
  dirs.push(dir);
  const file = join(dir, 'out.log');
  const script = `
    import fs from 'node:fs';
    const { createGatewayLogger } = await import(${LOG_MODULE});
    const OUT = ${JSON.stringify(file)};
    const log = createGatewayLogger({ level: 'info' });
    ${body}`;
  const fd = openSync(file, 'w');
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', stdout === 'file' ? fd : 'pipe', 'pipe'],
  });
  closeSync(fd);
  // The reader goes away before the first line: every write meets EPIPE.
  if (stdout === 'closed-pipe') child.stdout?.destroy();
  let stderr = '';
  child.stderr?.on('data', (chunk) => {
    stderr += chunk;
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const lines = readFileSync(file, 'utf8')
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line) as { msg: string });
  return { code, stderr, messages: lines.map((line) => line.msg) };
}

describe("the gateway's default log destination", () => {
  it('writes the lines of one turn of the event loop together, once the turn ends', async () => {
    const run = await runWithLogger(`
      log.info('one'); log.info('two'); log.info('three');
      const during = fs.statSync(OUT).size;
      setImmediate(() => {
        process.stderr.write(JSON.stringify({ during, after: fs.readFileSync(OUT, 'utf8').split('\\n').length - 1 }));
      });`);
    expect(run.code).toBe(0);
    // Held while the turn runs, all three out before the next callback of the same check phase.
    expect(JSON.parse(run.stderr)).toEqual({ during: 0, after: 3 });
    expect(run.messages).toEqual(['one', 'two', 'three']);
  });

  it('loses no line logged just before process.exit()', async () => {
    const run = await runWithLogger(`
      log.info('first'); log.warn('second');
      process.exit(3);`);
    expect(run.code).toBe(3);
    expect(run.messages).toEqual(['first', 'second']);
  });

  it('writes as it goes when one turn logs more than it holds, and keeps the order', async () => {
    const run = await runWithLogger(`
      for (let i = 0; i < 2000; i++) log.info('line ' + i);
      process.stderr.write(String(fs.statSync(OUT).size > 0));`);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('true');
    expect(run.messages).toEqual(Array.from({ length: 2000 }, (_, i) => `line ${i}`));
  });

  it('drops its lines once standard output is gone, and the process goes on and exits normally', async () => {
    const run = await runWithLogger(
      `
      let n = 0;
      const timer = setInterval(() => {
        log.info('into nothing ' + n);
        if (++n === 20) {
          clearInterval(timer);
          process.stderr.write('still running');
        }
      }, 5);`,
      'closed-pipe',
    );
    expect(run.stderr).toBe('still running');
    expect(run.code).toBe(0);
  });
});
