/**
 * How the Redis store wakes duplicates waiting with `concurrent: 'wait'`: pub/sub on one channel
 * per record, over a connection of its own, with polling while that connection is not up.
 *
 * @module
 */

/**
 * The connection the store opens for pub/sub with `client.duplicate()`: the part of an ioredis
 * `Redis` or `Cluster` it calls. The store owns this connection and closes it in `close()`.
 *
 * @example
 * ```ts
 * const subscriber: RedisStoreSubscriber = new Redis().duplicate();
 * ```
 */
export interface RedisStoreSubscriber {
  /** ioredis connection status (`'wait'`, `'connecting'`, `'ready'`, …). */
  readonly status: string;
  /** Connects a client created with `lazyConnect`. */
  connect(): Promise<void>;
  subscribe(...channels: string[]): Promise<unknown>;
  unsubscribe(...channels: string[]): Promise<unknown>;
  on(event: 'message', listener: (channel: string, message: string) => void): unknown;
  on(event: 'ready' | 'error', listener: (...args: unknown[]) => void): unknown;
  /** Closes the connection at once. */
  disconnect(): void;
}

/** What {@link createChangeWaiter} needs of its store. */
export interface ChangeWaiterOptions {
  /** Opens the store's own pub/sub connection; called once, on the first wait. */
  openSubscriber(): RedisStoreSubscriber;
  /** Whether `complete` and `release` publish; with it off, waiters only poll. */
  notify: boolean;
  /** How often a waiter re-reads the record while pub/sub is not up. */
  pollMs: number;
  /** The channel a record's changes are published on. */
  channelOf(key: string): string;
  /** Whether the record still has a live owner, and for how long its lease runs. */
  peek(key: string): Promise<{ live: boolean; leaseRemainingMs: number }>;
}

/** The store's `waitForChange`, and `close` to end every wait and the pub/sub connection. */
export interface ChangeWaiter {
  waitForChange(key: string, timeoutMs: number): Promise<void>;
  close(): void;
}

interface ChannelEntry {
  waiters: Set<Waiter>;
  subscribed: boolean;
}

interface Waiter {
  /** Resolves the wait; idempotent. */
  wake(): void;
  /** Re-reads the record and wakes if it is no longer a live in-flight record. */
  check(): void;
}

export function createChangeWaiter({
  openSubscriber,
  notify,
  pollMs,
  channelOf,
  peek,
}: ChangeWaiterOptions): ChangeWaiter {
  // Pub/sub: one channel per record, subscribed while at least one local waiter waits on it.
  // COMPLETE and RELEASE publish on it. A waiter peeks once its subscription is confirmed (the
  // change may have happened between the claim and the subscription), and polls only while the
  // subscription is not up. Messages sent while the subscriber reconnected are lost, so every
  // waiter is woken when it comes back; a wake-up is only ever a hint to claim again.
  const channels = new Map<string, ChannelEntry>();
  let subscriber: RedisStoreSubscriber | undefined;
  let subscriberWasReady = false;
  let closed = false;

  function getSubscriber(): RedisStoreSubscriber {
    if (subscriber) return subscriber;
    const sub = openSubscriber();
    subscriber = sub;
    // Our own connection: its errors only mean waiters poll until it reconnects, and ioredis
    // would print an unhandled 'error' event if nobody listened.
    sub.on('error', () => {});
    sub.on('message', (channel: string) => {
      const entry = channels.get(channel);
      if (entry) for (const waiter of [...entry.waiters]) waiter.wake();
    });
    sub.on('ready', () => {
      if (closed) return;
      const reconnected = subscriberWasReady;
      subscriberWasReady = true;
      for (const [channel, entry] of channels) {
        if (reconnected) {
          for (const waiter of [...entry.waiters]) waiter.wake();
        } else if (!entry.subscribed) {
          subscribe(channel, entry);
        }
      }
    });
    if (sub.status === 'wait') sub.connect().catch(() => {});
    return sub;
  }

  function subscribe(channel: string, entry: ChannelEntry): void {
    getSubscriber()
      .subscribe(channel)
      .then(
        () => {
          const current = channels.get(channel);
          // Every waiter left while the subscription was on its way: undo it.
          if (!current && !closed) subscriber?.unsubscribe(channel).catch(() => {});
          if (current !== entry) return;
          entry.subscribed = true;
          for (const waiter of entry.waiters) waiter.check();
        },
        () => {
          // Not subscribed: the entry's waiters keep polling, and the next 'ready' retries.
        },
      );
  }

  function join(channel: string, waiter: Waiter): ChannelEntry {
    let entry = channels.get(channel);
    if (!entry) {
      entry = { waiters: new Set(), subscribed: false };
      channels.set(channel, entry);
      entry.waiters.add(waiter);
      if (getSubscriber().status === 'ready') subscribe(channel, entry);
    } else {
      entry.waiters.add(waiter);
      if (entry.subscribed) waiter.check();
    }
    return entry;
  }

  function leave(channel: string, waiter: Waiter): void {
    const entry = channels.get(channel);
    if (!entry) return;
    entry.waiters.delete(waiter);
    if (entry.waiters.size > 0) return;
    channels.delete(channel);
    if (entry.subscribed && subscriber && !closed) subscriber.unsubscribe(channel).catch(() => {});
  }

  function waitForChange(key: string, timeoutMs: number): Promise<void> {
    if (closed) return new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(timeoutMs, pollMs))));
    const channel = channelOf(key);
    return new Promise<void>((resolve) => {
      let done = false;
      let leaseTimer: NodeJS.Timeout | undefined;
      const waiter: Waiter = {
        wake() {
          if (done) return;
          done = true;
          clearTimeout(timeout);
          clearInterval(poll);
          clearTimeout(leaseTimer);
          if (notify) leave(channel, waiter);
          resolve();
        },
        check() {
          peek(key).then(
            ({ live, leaseRemainingMs }) => {
              if (done) return;
              if (!live) return waiter.wake();
              // The owner may crash: wake when its lease passes, so the waiter can take over.
              clearTimeout(leaseTimer);
              leaseTimer = setTimeout(waiter.wake, leaseRemainingMs + 5);
            },
            () => {
              // Redis unreachable: the timeout still ends the wait, and the claim that follows reports it.
            },
          );
        },
      };
      const timeout = setTimeout(waiter.wake, Math.max(0, timeoutMs));
      // With notify off nothing is published, so the wait is polling only.
      const entry = notify ? join(channel, waiter) : undefined;
      if (!entry) waiter.check();
      const poll = setInterval(() => {
        if (!entry?.subscribed || subscriber?.status !== 'ready') waiter.check();
      }, pollMs);
    });
  }

  function close(): void {
    if (closed) return;
    closed = true;
    for (const entry of [...channels.values()]) for (const waiter of [...entry.waiters]) waiter.wake();
    channels.clear();
    subscriber?.disconnect();
  }

  return { waitForChange, close };
}
