/**
 * WAL checkpoints for the SQLite store, on a thread of their own.
 *
 * In WAL mode every commit appends pages to the `-wal` file, and a checkpoint copies them back
 * into the database file. SQLite's default runs that checkpoint inside the commit that pushes the
 * WAL past 1000 pages, on the connection that committed: for the store, on the event loop, in
 * the middle of a request. Under load that is most of a write's cost (about a third of the
 * store's `pwrite` calls, and its `fsync`s), and it lands on whichever request happens to commit
 * at that moment. Here a worker thread holds a second connection to the same file and runs
 * `PRAGMA wal_checkpoint(PASSIVE)` in a loop, while the store's own connection never
 * checkpoints. A passive checkpoint takes no lock that writers or readers wait for, so the event
 * loop never waits on it either; it only copies what no reader still needs.
 *
 * Durability is unchanged: a commit is as durable once it is in the WAL as before (the
 * `synchronous` level decides), and the checkpoint only moves committed pages.
 *
 * @module
 */
import { Worker } from 'node:worker_threads';

/** Options of {@link startCheckpointer}. */
export interface CheckpointerOptions {
  /** The database file (already in WAL mode). */
  path: string;
  /** Where `require` finds better-sqlite3: the worker loads the same build as the store. */
  driverPath: string;
  /** Pause between checkpoints while the WAL holds nothing new, in ms. */
  idleMs: number;
  /** Pause between checkpoints while writes keep coming, in ms. */
  busyMs: number;
  /**
   * Called once if the worker cannot start or dies: the store then checkpoints inline again, so
   * the WAL never grows without bound. Must not throw.
   */
  onFailed(error: unknown): void;
}

/** A running checkpoint thread. */
export interface Checkpointer {
  /** Ends the loop and closes the worker's connection; resolves when the thread has exited. */
  stop(): Promise<void>;
}

// Plain CommonJS, run with `eval: true`: the same text works from dist/ and from the TypeScript
// sources under test, where a worker file would have to be compiled first.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
let db;
let timer;
let last = -1;
// Errors are sent as plain fields: a driver's own error class loses its message in the clone.
function stop(failure) {
  clearTimeout(timer);
  if (failure) parentPort.postMessage({ failed: { message: String(failure && failure.message || failure), code: failure && failure.code } });
  try { if (db) db.close(); } catch {}
  parentPort.close();
}
function tick() {
  try {
    const [result] = db.pragma('wal_checkpoint(PASSIVE)');
    // log: frames in the WAL. It changes (and falls to 0 when a writer restarts the WAL) only if
    // writes arrived since the last look.
    const moved = result.log !== last;
    last = result.log;
    timer = setTimeout(tick, moved ? workerData.busyMs : workerData.idleMs);
  } catch (error) {
    stop(error);
  }
}
parentPort.on('message', () => stop());
try {
  const Database = require(workerData.driverPath);
  db = new Database(workerData.path, { fileMustExist: true, timeout: 0 });
  tick();
} catch (error) {
  stop(error);
}
`;

/** Starts the checkpoint thread on `options.path`. It never keeps the process alive. */
export function startCheckpointer(options: CheckpointerOptions): Checkpointer {
  const { path, driverPath, idleMs, busyMs, onFailed } = options;
  let failed = false;
  const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, driverPath, idleMs, busyMs } });
  worker.unref();
  const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  let stopping = false;
  const fail = (error: unknown): void => {
    if (failed || stopping) return;
    failed = true;
    try {
      onFailed(error);
    } catch {
      // A throwing callback must not become an uncaught exception on the worker's events.
    }
  };
  worker.on('message', (message: { failed?: { message: string; code?: string } }) => {
    if (message.failed) fail(Object.assign(new Error(message.failed.message), { code: message.failed.code }));
  });
  worker.on('error', fail);
  worker.on('exit', (code) => fail(new Error(`the SQLite checkpoint thread ended (exit code ${code})`)));
  return {
    async stop() {
      if (stopping) return exited;
      stopping = true;
      if (!failed) worker.postMessage('stop');
      // A thread stuck in a checkpoint (a slow disk) must not hold close() for long.
      const timer = setTimeout(() => void worker.terminate(), 5_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
