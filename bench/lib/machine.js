/** The machine description RESULTS.md starts with. */
import { execFileSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';

function run(command, argv, cwd) {
  try {
    return execFileSync(command, argv, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return '';
  }
}

export function machine(root) {
  return {
    nproc: run('nproc', []),
    lscpu: run('lscpu', []).split('\n').slice(0, 10).join('\n'),
    cpuModel: cpus()[0]?.model ?? '',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    node: process.version,
    kernel: run('uname', ['-sr']),
    commit: run('git', ['rev-parse', '--short', 'HEAD'], root),
    dirty: run('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src'], root) !== '',
    redis: run('redis-server', ['--version']).replace(/^Redis server /, ''),
    postgres: run('psql', ['--version']),
  };
}
