/**
 * Starts `test/redis/app.js` in its own OS process and reads its JSON-line reports.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const APP = fileURLToPath(new URL('./app.js', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/stores/redis.js', import.meta.url));

/** One JSON line an app child wrote. */
export type AppMessage = { type: string; [field: string]: unknown };

/** What the child app reads from IDEMPO_TEST_CONFIG. */
export interface AppConfig {
  redis?: { host: string; port: number };
  cluster?: { host: string; port: number }[];
  prefix: string;
  lease?: string | number;
  ttl?: string | number;
  concurrent?: 'reject' | 'wait';
  waitTimeout?: string | number;
  keys?: string[];
  requests?: number;
  handlerMs?: number;
  name?: string;
  block?: boolean;
  /** `serve`: the step's work reports `step` and waits for a `go` before it returns. */
  blockInStep?: boolean;
  /** How a `serve` handler answers (see app.js); `write-head` by default. */
  respond?: 'write-head' | 'status' | 'head-first';
}

export interface AppChild {
  readonly process: ChildProcess;
  /** Every message so far, in order. */
  readonly messages: AppMessage[];
  /** Resolves with the first message (from `from` on) that matches, waiting up to `timeoutMs`. */
  waitFor(match: (message: AppMessage) => boolean, timeoutMs?: number, from?: number): Promise<AppMessage>;
  /** Writes a `go` line to the child's stdin. */
  go(): void;
  /** Kills the child (SIGKILL unless told) and waits for it to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Throws a clear error when the package is not built (`npm test` builds it; `npm run build` otherwise). */
export function assertBuilt(): void {
  if (!existsSync(DIST)) throw new Error('dist/ is missing: run `npm run build` before the Redis integration tests');
}

export function startApp(mode: 'load' | 'serve', config: AppConfig): AppChild {
  assertBuilt();
  const child = spawn(process.execPath, [APP, mode], {
    env: { ...process.env, IDEMPO_TEST_CONFIG: JSON.stringify(config) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const messages: AppMessage[] = [];
  const listeners = new Set<() => void>();
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  createInterface({ input: child.stdout! }).on('line', (line) => {
    try {
      messages.push(JSON.parse(line) as AppMessage);
    } catch {
      messages.push({ type: 'text', line });
    }
    for (const listener of [...listeners]) listener();
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('exit', () => {
    for (const listener of [...listeners]) listener();
  });

  return {
    process: child,
    messages,
    waitFor(match, timeoutMs = 10_000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = messages.slice(from).find(match);
          if (found) {
            cleanup();
            resolve(found);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            cleanup();
            reject(new Error(`app exited (${child.exitCode ?? child.signalCode}) before the message came:\n${stderr}`));
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`no matching message within ${timeoutMs} ms; got ${JSON.stringify(messages)}\n${stderr}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    go() {
      child.stdin!.write('go\n');
    },
    async kill(signal = 'SIGKILL') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill(signal);
      }
      await exited;
    },
  };
}
