import pino, { type DestinationStream, type Logger } from 'pino';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/** How the gateway writes its log: one JSON object a line for machines, or one readable line for people. */
export type LogFormat = 'json' | 'pretty';

/** The levels `LOG_LEVEL` accepts (pino's). */
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Options of {@link createGatewayLogger}. */
export interface GatewayLoggerOptions {
  /**
   * @default `LOG_LEVEL` or `'info'`
   */
  level?: string;
  /**
   * @default `IDEMPO_LOG_FORMAT` or `'json'`
   */
  format?: string;
  /** Where lines go. @default standard output (asynchronous writes, flushed at exit) */
  destination?: DestinationStream;
}

/**
 * The gateway's pino logger. JSON stays the default; `pretty` prints `12:00:01.234 INFO  message
 * key=value …`, with no dependency. A bad level or format is a one-line {@link IdempotencyConfigInvalidError}
 * instead of pino's own crash.
 *
 * @example
 * ```ts
 * const logger = createGatewayLogger({ level: 'debug', format: 'pretty' });
 * ```
 */
export function createGatewayLogger({
  level = process.env.LOG_LEVEL || 'info',
  format = process.env.IDEMPO_LOG_FORMAT || 'json',
  destination,
}: GatewayLoggerOptions = {}): Logger {
  const checkedLevel = checkLevel(level);
  const checkedFormat = checkFormat(format);
  const out = destination ?? stdoutDestination();
  return pino({ level: checkedLevel }, checkedFormat === 'pretty' ? prettyStream(out) : out);
}

/** The standard-output destinations made here, each waiting for its last lines. */
const STDOUT_DESTINATIONS = new Set<(withinMs: number) => Promise<void>>();

/**
 * Standard output with asynchronous writes (a synchronous write per line was a large share of the
 * gateway's time per request), made safe to exit with. At exit pino flushes it synchronously, and
 * that flush retries a failing write forever (sonic-boom retries every error, not only EAGAIN): a
 * gateway whose standard output is gone (its reader died with the parent, a terminal closed)
 * stopped serving but never exited. So a write error drops the lines from then on, and
 * {@link settleLogs} lets the writes under way finish before the process exits.
 */
function stdoutDestination(): DestinationStream {
  const out = pino.destination({ dest: 1, sync: false });
  let unwritten = 0;
  const waiters = new Set<() => void>();
  const wake = () => {
    for (const waiter of [...waiters]) waiter();
  };
  const giveUp = () => {
    out.write = () => true;
    // Destroyed, pino's flush at exit passes it by (after EPIPE, pino has disarmed it itself).
    if (!(out as { destroyed?: boolean }).destroyed) out.destroy();
    unwritten = 0;
    wake();
  };
  const write = out.write.bind(out);
  out.write = (data: string) => {
    unwritten += Buffer.byteLength(data);
    return write(data);
  };
  out.on('write', (n: number) => {
    unwritten = Math.max(0, unwritten - n);
    if (unwritten === 0) wake();
  });
  out.on('error', giveUp);
  STDOUT_DESTINATIONS.add((withinMs) =>
    unwritten === 0
      ? Promise.resolve()
      : new Promise<void>((resolve) => {
          const timer = setTimeout(giveUp, withinMs);
          const done = () => {
            if (unwritten > 0) return;
            clearTimeout(timer);
            waiters.delete(done);
            resolve();
          };
          waiters.add(done);
        }),
  );
  return out;
}

/**
 * Waits until the lines the gateway's default loggers have written to standard output are out,
 * or `withinMs` pass (then they are dropped), so that `process.exit()` neither loses them nor
 * hangs on them. {@link stopOnSignals} calls it before it exits.
 *
 * @example
 * ```ts
 * await gateway.close();
 * await settleLogs();
 * process.exit(0);
 * ```
 */
export async function settleLogs(withinMs = 2_000): Promise<void> {
  await Promise.all([...STDOUT_DESTINATIONS].map((settle) => settle(withinMs)));
}

export function checkLevel(level: string): string {
  const lower = level.trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(lower)) {
    throw new IdempotencyConfigInvalidError(
      `LOG_LEVEL: expected one of ${LOG_LEVELS.join(', ')}; got ${JSON.stringify(level)}`,
    );
  }
  return lower;
}

export function checkFormat(format: string): LogFormat {
  const lower = format.trim().toLowerCase();
  if (lower !== 'json' && lower !== 'pretty') {
    throw new IdempotencyConfigInvalidError(`--log-format: expected json or pretty; got ${JSON.stringify(format)}`);
  }
  return lower;
}

const LEVEL_NAMES: Record<number, string> = {
  10: 'TRACE',
  20: 'DEBUG',
  30: 'INFO ',
  40: 'WARN ',
  50: 'ERROR',
  60: 'FATAL',
};
const OMITTED = new Set(['level', 'time', 'pid', 'hostname', 'msg']);

/** Turns pino's JSON lines into `time LEVEL message key=value …` before they reach `out`. */
function prettyStream(out: DestinationStream): DestinationStream {
  return {
    write(line: string) {
      out.write(prettyLine(line));
    },
  };
}

/** One JSON log line as a readable line; anything that is not JSON passes as it is. */
export function prettyLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const time = new Date(Number(entry.time)).toISOString().slice(11, 23);
  const level = LEVEL_NAMES[Number(entry.level)] ?? String(entry.level);
  let text = `${time} ${level} ${String(entry.msg ?? '')}`;
  for (const [name, value] of Object.entries(entry)) {
    if (OMITTED.has(name) || value === undefined) continue;
    if (name === 'err' && typeof value === 'object' && value !== null) {
      const err = value as { type?: string; message?: string; code?: string };
      text += ` err=${JSON.stringify(`${err.code ?? err.type ?? 'Error'}: ${err.message ?? ''}`)}`;
      continue;
    }
    text += ` ${name}=${typeof value === 'string' && /^[^\s"=]+$/.test(value) ? value : JSON.stringify(value)}`;
  }
  return `${text}\n`;
}

/** Milliseconds for a log line: a tenth of a millisecond is all a person reads. */
export function roundMs(ms: number): number {
  return Math.round(ms * 10) / 10;
}
