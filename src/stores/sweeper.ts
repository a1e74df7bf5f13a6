/**
 * The timer every store uses to delete expired records: one run at a time, never keeping the
 * process alive, failures handed to the store's reporter instead of thrown into a timer.
 *
 * @module
 */

/** A running sweep timer. */
export interface Sweeper {
  /** Stops the timer; resolves once a run in progress has finished. */
  stop(): Promise<void>;
}

/**
 * Calls `sweep` every `intervalMs`, skipping a tick while the previous run is still going (a
 * slow database must not pile sweeps up); `undefined` runs no timer.
 */
export function startSweeper(
  intervalMs: number | undefined,
  sweep: () => unknown,
  report: (error: unknown) => void,
): Sweeper {
  let running: Promise<void> | undefined;
  let stopped = false;
  const tick = (): void => {
    if (running || stopped) return;
    // Started from a resolved promise, so even a sweep that throws at once settles after
    // `running` is set, and clears it.
    running = Promise.resolve()
      .then(async () => {
        await sweep();
      })
      .then(undefined, (error: unknown) => {
        try {
          report(error);
        } catch {
          // A throwing reporter must not leave a rejection no one handles.
        }
      })
      .finally(() => {
        running = undefined;
      });
  };
  const timer = intervalMs === undefined ? undefined : setInterval(tick, intervalMs);
  timer?.unref();
  return {
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await running;
    },
  };
}
