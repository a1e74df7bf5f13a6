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
  /** Where lines go. @default standard output (one synchronous write per turn of the event loop) */
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

/** Writes out the lines the standard-output destinations made here still hold. */
const PENDING_WRITES = new Set<() => void>();

// Lines held for the end of the turn are written before the process exits, however it exits
// (process.exit included; a SIGKILL loses at most that one turn's lines).
process.on('exit', () => {
  for (const write of PENDING_WRITES) write();
});

/** Past this many characters held, a turn's lines are written at once instead of at its end. */
const HELD_CHARS = 16_384;

/**
 * Standard output, written synchronously once per turn of the event loop: the lines logged in
 * one turn (one per request under load) leave as one `write` when the turn ends. Measured side by
 * side against an asynchronous write per line (`bench/ab.js`, two builds), this takes a third to
 * a half of the line's CPU cost off: the hand-over of each write to libuv's thread pool and back,
 * which a synchronous write does without. A synchronous write waits for a reader that does not read,
 * as `console.log` does on a pipe; a reader that is gone (EPIPE) makes the gateway drop its
 * lines from then on instead of retrying them for ever, so a gateway whose log went away still
 * exits (its parent died with the reader, a terminal closed).
 */
function stdoutDestination(): DestinationStream {
  const out = pino.destination({ dest: 1, sync: true });
  let held: string[] = [];
  let heldChars = 0;
  let gone = false;
  let scheduled = false;
  const writeHeld = () => {
    scheduled = false;
    if (held.length === 0) return;
    const data = held.length === 1 ? (held[0] as string) : held.join('');
    held = [];
    heldChars = 0;
    out.write(data);
  };
  out.on('error', () => {
    gone = true;
    held = [];
    heldChars = 0;
    PENDING_WRITES.delete(writeHeld);
    out.write = () => true;
  });
  PENDING_WRITES.add(writeHeld);
  const destination = {
    /** pino's `logger.flush()`: writes the held lines now. */
    flush(done?: (error?: Error) => void) {
      writeHeld();
      done?.();
    },
    write(line: string) {
      if (gone) return;
      held.push(line);
      heldChars += line.length;
      if (heldChars >= HELD_CHARS) writeHeld();
      else if (!scheduled) {
        scheduled = true;
        setImmediate(writeHeld);
      }
    },
  };
  return destination;
}

/**
 * Writes the lines the gateway's default loggers hold for the end of the current turn of the
 * event loop, so that `process.exit()` loses none of them. The writes are synchronous: once the
 * promise settles, the lines are out (or were dropped, if standard output is gone).
 * {@link stopOnSignals} calls it before it exits. (`withinMs` bounded the wait when the writes
 * were asynchronous; it is kept so callers written for that still compile, and is not used.)
 *
 * @example
 * ```ts
 * await gateway.close();
 * await settleLogs();
 * process.exit(0);
 * ```
 */
export async function settleLogs(_withinMs = 2_000): Promise<void> {
  for (const write of PENDING_WRITES) write();
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
