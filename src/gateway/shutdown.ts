import { settleLogs } from './log.js';

/**
 * The parent this process started under, read when the module loads (the CLI imports it at start).
 * Read later, when `stopOnSignals` is called, it could already be the adopter: a parent killed
 * while the gateway was still starting would never be missed.
 */
const STARTED_UNDER = process.ppid;

/** Options of {@link stopOnSignals}. */
export interface StopOnSignalsOptions {
  /**
   * How often to look whether the parent process is gone, in ms (`0`: never).
   * @default 500
   */
  parentPollMs?: number;
  /** Told why the stop began (`'SIGTERM'`, `'SIGINT'`, `'SIGHUP'`, `'parent exited'`). */
  onStop?: (reason: string) => void;
}

/**
 * Runs `stop` once, then exits (`0` when it resolved, `1` when it threw) once the log lines
 * written meanwhile are out ({@link settleLogs}), on SIGTERM, SIGINT or SIGHUP, or when the parent
 * process goes away. A second SIGINT or SIGTERM exits at once.
 *
 * The parent watch is what stops orphans: `npm start` and `npx idempo serve` run the command
 * under `sh -c`, and npm's SIGTERM ends that shell, which does not pass it on; the node process
 * is then re-parented, and notices it here. As PID 1 in a container (no parent to lose) the
 * signal handlers alone do the work: PID 1 gets no default action for SIGTERM, so without a
 * handler a `docker stop` would wait for its SIGKILL.
 *
 * @example
 * ```ts
 * const gateway = await startGateway({ upstream: 'http://127.0.0.1:3000' });
 * stopOnSignals(() => gateway.close());
 * ```
 */
export function stopOnSignals(
  stop: () => Promise<void>,
  { parentPollMs = 500, onStop }: StopOnSignalsOptions = {},
): void {
  let stopping = false;
  const begin = (reason: string) => {
    if (stopping) {
      if (reason === 'SIGINT' || reason === 'SIGTERM') process.exit(1);
      return;
    }
    stopping = true;
    onStop?.(reason);
    stop().then(
      () => settleLogs().finally(() => process.exit(0)),
      () => settleLogs().finally(() => process.exit(1)),
    );
  };
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.on(signal, () => begin(signal));
  const parent = STARTED_UNDER;
  if (parentPollMs > 0 && parent > 1) {
    const timer = setInterval(() => {
      if (process.ppid !== parent) {
        clearInterval(timer);
        begin('parent exited');
      }
    }, parentPollMs);
    timer.unref();
  }
}
