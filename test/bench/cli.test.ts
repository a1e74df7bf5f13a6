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
import { parseToolArgs, usageOf } from '../../bench/lib/cli.js';
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

  it.each([
    ['run', '--runs', 'two', 'a whole number of 1 or more'],
    ['run', '--duration', '0', 'a number above 0'],
    ['ab', '--slice-warmup', '1s', 'a number of seconds, 0 or more'],
    ['ab', '--paced', '-1', 'a number of seconds, 0 or more'],
    ['ab', '--slices', '', 'a whole number of 1 or more'],
    ['instructions', '--discard', '1.5', 'a whole number of 0 or more'],
    ['sqlite-store', '--loops', ' 4', 'a whole number of 1 or more'],
  ])(
    '%s %s=%j names the option and the kind of number, prints the usage and exits 2',
    (name, option, value, expected) => {
      const result = tool(name, `${option}=${value}`);
      expect(result.status).toBe(2);
      expect(result.stderr).toContain(`${option}: expected ${expected}, got ${JSON.stringify(value)}`);
      expect(result.stderr).toContain(usageFor(name));
      expect(result.stderr).not.toMatch(/\n\s+at /);
    },
  );

  it.each([
    ['instructions', ['--windows=3', '--discard=3', 'fastify/fresh'], '--windows (3) must be above --discard (3)'],
    ['instructions', [], 'name the cases to count'],
    ['ab', ['fastify/fresh'], 'name at least two cases'],
  ])('%s %j: what the options and cases must agree on, with the usage, exit 2', (name, args, expected) => {
    const result = tool(name, ...args);
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(expected);
    expect(result.stderr).toContain(usageFor(name));
    expect(result.stderr).not.toMatch(/\n\s+at /);
  });

  it('returns numeric options as numbers, defaults included, and leaves an absent one undefined', () => {
    const { values } = parseToolArgs(pathToFileURL(toolPath('ab')).href, {
      args: ['--slice', '0.5', '--paced=0'],
      options: {
        slice: { type: 'string', default: '2', number: 'positive' },
        paced: { type: 'string', number: 'seconds' },
        slices: { type: 'string', default: '12', number: 'count' },
        rate: { type: 'string', number: 'count' },
        json: { type: 'string' },
      },
    });
    expect(values).toEqual({ slice: 0.5, paced: 0, slices: 12, json: undefined, rate: undefined });
  });

  it('reads a usage written as line comments', () => {
    const usage = usageFor('replica-ack');
    expect(usage.startsWith("The cost of the Redis store's replicaAck")).toBe(true);
    expect(usage).not.toContain('//');
  });
});
