/**
 * How the PostgreSQL store wakes duplicates waiting with `concurrent: 'wait'`: one pooled
 * connection that `LISTEN`s on the store's channel, shared by every wait in this process, and
 * re-reads of the key while that connection is not up.
 *
 * @module
 */
import { IdempotencyStoreUnavailableError } from '../vocabulary/index.js';
import type { PostgresNotification, PostgresPool } from './postgres-client.js';

/** What {@link createChangeListener} needs of its store. */
export interface ChangeListenerOptions {
  pool: PostgresPool;
  /** The channel `complete` and `release` notify on, with the key as payload. */
  channel: string;
  /** The same, quoted for `LISTEN`. */
  channelIdentifier: string;
  /** How often a waiter re-reads its key while the LISTEN connection is not up. */
  pollMs: number;
  /** Whether the key is still held by a live owner; rejects when the database fails. */
  held(key: string): Promise<boolean>;
  /** Where failures no request sees go (a lost LISTEN connection). */
  report(error: unknown): void;
}

/** The store's `waitForChange`, and `close` to end every wait and give the connection back. */
export interface ChangeListener {
  waitForChange(key: string, timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

/** The open LISTEN connection, as far as the store needs to know it. */
interface Listener {
  /** Destroys the connection and wakes every waiter. */
  drop(error?: Error): void;
}

export function createChangeListener({
  pool,
  channel,
  channelIdentifier,
  pollMs,
  held,
  report,
}: ChangeListenerOptions): ChangeListener {
  let closed = false;
  /** The LISTEN connection being opened or open; undefined when there is none. */
  let listener: Promise<Listener> | undefined;
  /** Resolvers of pending waits, by key. */
  const waiters = new Map<string, Set<() => void>>();

  function wake(key: string): void {
    const set = waiters.get(key);
    if (set) for (const resolve of [...set]) resolve();
  }

  function wakeAll(): void {
    for (const set of [...waiters.values()]) for (const resolve of [...set]) resolve();
  }

  function onNotification(message: PostgresNotification): void {
    if (message.channel === channel && message.payload !== undefined) wake(message.payload);
  }

  /**
   * Checks out the one LISTEN client. `forget` clears it from `listener` so the next wait opens a
   * new one; `drop` destroys it (a pooled connection must not keep listening) and wakes every
   * waiter, which then re-reads its key.
   */
  async function connectListener(forget: () => void): Promise<Listener> {
    const client = await pool.connect();
    let dropped = false;
    const drop = (error?: Error): void => {
      if (dropped) return;
      dropped = true;
      forget();
      client.release(error ?? true);
      if (error) report(error);
      wakeAll();
    };
    client.on('notification', onNotification);
    // A checked-out client with no 'error' listener would crash the process when the server goes away.
    client.on('error', (error) => drop(error));
    client.on('end', () =>
      drop(
        closed ? undefined : new IdempotencyStoreUnavailableError("The PostgreSQL store's LISTEN connection ended."),
      ),
    );
    try {
      await client.query(`LISTEN ${channelIdentifier}`);
    } catch (error) {
      drop(error instanceof Error ? error : new IdempotencyStoreUnavailableError(String(error)));
      throw error;
    }
    if (closed) {
      drop();
      throw new IdempotencyStoreUnavailableError('The PostgreSQL store is closed.');
    }
    return { drop };
  }

  function ensureListener(): Promise<Listener> {
    if (!listener) {
      const current: Promise<Listener> = connectListener(() => {
        if (listener === current) listener = undefined;
      });
      listener = current;
      current.catch(() => {
        if (listener === current) listener = undefined;
      });
    }
    return listener;
  }

  async function waitForChange(key: string, timeoutMs: number): Promise<void> {
    if (closed || !(timeoutMs > 0)) return;
    let listening = false;
    try {
      await ensureListener();
      listening = true;
    } catch (error) {
      report(error);
    }
    if (closed) return;
    await new Promise<void>((resolve) => {
      let poll: NodeJS.Timeout | undefined;
      let done = false;
      const timer = setTimeout(finish, timeoutMs);
      function finish(): void {
        done = true;
        clearTimeout(timer);
        clearTimeout(poll);
        const set = waiters.get(key);
        set?.delete(finish);
        if (set?.size === 0) waiters.delete(key);
        resolve();
      }
      const set = waiters.get(key) ?? new Set();
      waiters.set(key, set);
      set.add(finish);
      // Registered and listening first, then read: a change committed before this read is seen
      // by it, one committed after is announced to us. Without LISTEN, keep reading.
      const check = (): void => {
        held(key).then(
          (isHeld) => {
            if (done) return;
            if (!isHeld) finish();
            else if (!listening) poll = setTimeout(check, pollMs);
          },
          () => {
            // The database is failing too: give the caller a beat, then let it find out by claiming.
            if (!done) poll = setTimeout(finish, pollMs);
          },
        );
      };
      check();
    });
  }

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    wakeAll();
    const pending = listener;
    listener = undefined;
    const open = await pending?.catch(() => undefined);
    open?.drop();
  }

  return { waitForChange, close };
}
