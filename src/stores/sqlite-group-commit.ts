/**
 * Group commit for the SQLite store: the writes issued in one turn of the event loop commit in
 * one transaction.
 *
 * @module
 */
import { atCheckPhase, cancelCheckPhase } from './check-phase.js';
import { isBusy, LOCK_PAUSE_MAX_MS } from './sqlite-busy.js';

/** The part of a better-sqlite3 database that group commit uses. */
export interface TransactionalDatabase {
  transaction<T extends (...args: never[]) => unknown>(fn: T): T & { immediate: T };
}

/** Runs writes, each one atomic, committed together with the others of its turn. */
export interface GroupCommit {
  /**
   * Runs `write` inside a write transaction shared with the writes issued in the same turn of
   * the event loop; resolves with its result once the transaction has committed, so nothing a
   * caller sees is undone afterwards. `write` must be synchronous and touch only this database.
   */
  run<T>(write: () => T): Promise<T>;
  /** Commits what is queued now, without waiting for the turn to end (before closing). */
  flush(): void;
  /**
   * Commits what is queued now, as at the end of the turn, unless a batch is waiting out another
   * connection's lock: then the queue keeps its place behind that retry.
   */
  commitQueued(): void;
}

interface Pending {
  write: () => unknown;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
  giveUpAt: number;
}

/** Options of {@link groupCommit}. */
export interface GroupCommitOptions {
  /** Most writes in one transaction, so none holds the database's write lock long. */
  maxBatch: number;
  /** How long a write waits for another connection's lock before it fails with SQLITE_BUSY. */
  busyTimeoutMs: number;
}

/**
 * Returns a group committer over `db`.
 *
 * Each write transaction costs a commit (a WAL append, and at `synchronous = FULL` an fsync)
 * whatever it holds, and the commit is most of a small write's price: measured here, 20 claims
 * and completions per transaction cost a quarter of the CPU of one transaction each. Writes are
 * therefore queued and committed together at the event loop's check phase (`setImmediate`),
 * after the loop has handled every socket that was ready, so concurrent requests share commits
 * while a lone request waits less than one turn.
 *
 * A batch is one IMMEDIATE transaction: it takes the write lock before its first read, so each
 * write's reads and writes stay atomic against other processes, and writes of the same batch see
 * each other in order. When another connection holds the lock, the batch is tried again on timers
 * (the event loop keeps running) until a write's busy timeout passes. When a write throws, the
 * whole transaction rolls back and every write of the batch is run again in a transaction of its
 * own, so only the failing one fails.
 */
export function groupCommit(db: TransactionalDatabase, options: GroupCommitOptions): GroupCommit {
  const { maxBatch, busyTimeoutMs } = options;
  const commitAll = db.transaction((batch: Pending[]) => batch.map((pending) => pending.write()));
  let queue: Pending[] = [];
  // Cancels the flush scheduled for later, if any: a flush run early leaves it nothing to do.
  let cancelScheduled: (() => void) | undefined;
  let pauseMs = 0;

  function schedule(delayMs: number): void {
    if (cancelScheduled) return;
    if (delayMs === 0) {
      const immediate = atCheckPhase(flush);
      cancelScheduled = () => cancelCheckPhase(immediate);
    } else {
      const timer = setTimeout(flush, delayMs);
      cancelScheduled = () => clearTimeout(timer);
    }
  }

  function flush(): void {
    cancelScheduled?.();
    cancelScheduled = undefined;
    while (queue.length > 0) {
      const batch = queue.length <= maxBatch ? queue : queue.slice(0, maxBatch);
      queue = queue.length <= maxBatch ? [] : queue.slice(maxBatch);
      const waiting = commit(batch);
      if (waiting.length > 0) {
        // Another connection holds the lock: everything queued waits behind these, in order.
        queue = waiting.concat(queue);
        pauseMs = Math.min(Math.max(1, pauseMs * 2), LOCK_PAUSE_MAX_MS);
        schedule(pauseMs);
        return;
      }
    }
    pauseMs = 0;
  }

  /** Commits a batch; returns the writes that must wait for another connection's lock. */
  function commit(batch: Pending[]): Pending[] {
    let results: unknown[];
    try {
      results = commitAll.immediate(batch);
    } catch (error) {
      if (isBusy(error)) return giveUpLate(batch, error);
      return batch.length === 1 ? fail(batch, error) : batch.flatMap((pending) => commit([pending]));
    }
    for (let i = 0; i < batch.length; i++) (batch[i] as Pending).resolve(results[i]);
    return [];
  }

  function giveUpLate(batch: Pending[], error: unknown): Pending[] {
    const now = Date.now();
    const waiting: Pending[] = [];
    for (const pending of batch) {
      if (now >= pending.giveUpAt) pending.reject(error);
      else waiting.push(pending);
    }
    return waiting;
  }

  function fail(batch: Pending[], error: unknown): Pending[] {
    for (const pending of batch) pending.reject(error);
    return [];
  }

  return {
    run<T>(write: () => T): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        queue.push({
          write,
          resolve: resolve as (value: unknown) => void,
          reject,
          giveUpAt: Date.now() + busyTimeoutMs,
        });
        schedule(0);
      });
    },
    flush,
    commitQueued() {
      // While another connection holds the lock, the retry on its timer takes the queue.
      if (pauseMs === 0) flush();
    },
  };
}
