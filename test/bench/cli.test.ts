/**
 * The bench tools' command lines: `--help` prints the tool's opening comment (its usage) and an
 * unknown option prints the error and that usage, exit status 2, instead of a stack trace. Runs
 * each tool's option parsing only: with `--help` or a bad option no tool measures anything.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain JavaScript module of the benchmarks, without types.
import { usageOf } from '../../bench/lib/cli.js';
import { ROOT } from '../helpers/servers.js';

const TOOLS = ['ab', 'instructions', 'keys-curve', 'profile', 'redis-store', 'replica-ack', 'run', 'sqlite-store'];

const toolPath = (name: string) => join(ROOT, 'bench', `${name}.js`);
const usageFor = (name: string) => usageOf(pathToFileURL(toolPath(name)).href) as string;

function tool(name: string, ...args: string[]) {
  return spawnSync(process.execPath, [toolPath(name), ...args], { encoding: 'utf8' });
}

describe('bench tools: --help and unknown options', () => {
  it.each(TOOLS)('%s --help prints its usage and exits 0', (name) => {
    const result = tool(name, '--help');
    expect(result.status).toBe(0);
    const usage = usageFor(name);
    expect(usage.length).toBeGreaterThan(80);
    expect(usage).not.toMatch(/^\s*(\*|\/\/)/m);
    expect(result.stdout.trim()).toBe(usage);
  });

  it.each(TOOLS)('%s --no-such-option names the option, prints the usage and exits 2', (name) => {
    const result = tool(name, '--no-such-option');
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("Unknown option '--no-such-option'");
    expect(result.stderr).toContain(usageFor(name));
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('-h is --help', () => {
    const result = tool('ab', '-h');
    expect(result.status).toBe(0);
    expect(result.stdout).toContain('Side by side');
  });

  it('reads a usage written as line comments', () => {
    const usage = usageFor('replica-ack');
    expect(usage.startsWith("The cost of the Redis store's replicaAck")).toBe(true);
    expect(usage).not.toContain('//');
  });
});
