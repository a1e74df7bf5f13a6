/**
 * SQLite's "another connection holds the lock", and waiting it out on timers rather than in
 * SQLite's busy handler, which would sleep inside the call and freeze the event loop.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** The longest pause between two tries for another connection's write lock. */
export const LOCK_PAUSE_MAX_MS = 20;

/** SQLITE_BUSY and its extended codes: another connection holds the lock; trying again may work. */
export function isBusy(error: unknown): boolean {
  return (
    typeof (error as { code?: unknown })?.code === 'string' &&
    (error as { code: string }).code.startsWith('SQLITE_BUSY')
  );
}

/**
 * Runs `attempt` until it returns; while it throws an error that `retryable` accepts (by default
 * SQLITE_BUSY) and `busyTimeoutMs` has not passed, tries again after a pause that doubles from
 * 1 ms up to {@link LOCK_PAUSE_MAX_MS}. Any other error, or one past the timeout, is thrown.
 */
export async function retryWhileBusy<T>(
  attempt: () => T,
  busyTimeoutMs: number,
  retryable: (error: unknown) => boolean = isBusy,
): Promise<T> {
  const giveUpAt = Date.now() + busyTimeoutMs;
  for (let pauseMs = 1; ; pauseMs = Math.min(pauseMs * 2, LOCK_PAUSE_MAX_MS)) {
    try {
      return attempt();
    } catch (error) {
      if (!retryable(error) || Date.now() >= giveUpAt) throw error;
    }
    await sleep(pauseMs);
  }
}
