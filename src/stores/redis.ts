/**
 * The Redis store: records in Redis (standalone or Cluster) through the user's own ioredis client.
 *
 * @module
 */
import type { Writable } from 'node:stream';
import {
  type ClaimInput,
  type ClaimResult,
  type FencedResult,
  IdempotencyConfigError,
  type IdempotencyStore,
  IdempotencyStoreError,
  type StoredResponse,
} from '../vocabulary/index.js';
import {
  CLAIM_SCRIPT,
  COMPLETE_SCRIPT,
  PEEK_SCRIPT,
  RELEASE_SCRIPT,
  RENEW_SCRIPT,
  SAVE_STEP_SCRIPT,
} from './redis-scripts.js';

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

/**
 * The part of an ioredis `Redis` or `Cluster` client the store uses, so that idempo's runtime
 * never imports ioredis. The store claims with a plain `setBuffer(…)`, registers its Lua
 * scripts with `defineCommand` and runs them; it never connects, closes or logs on this client.
 *
 * @example
 * ```ts
 * import { Cluster, Redis } from 'ioredis';
 * const standalone: RedisStoreClient = new Redis();
 * const cluster: RedisStoreClient = new Cluster([{ host: '127.0.0.1', port: 7000 }]);
 * ```
 */
export interface RedisStoreClient {
  defineCommand(name: string, definition: { numberOfKeys: number; lua: string }): void;
  /**
   * The claim's `SET key value PX ms NX GET`, with a Buffer reply. (Not `callBuffer`: with
   * `enableAutoPipelining`, ioredis 5 sends a `call` without its command name.)
   */
  setBuffer(key: string, value: string, px: 'PX', milliseconds: string, nx: 'NX', get: 'GET'): Promise<Buffer | null>;
  /** Used once, lazily, to open the store's own pub/sub connection for `waitForChange`. */
  duplicate(): RedisStoreSubscriber;
  /** `PING`, for the store's health check ({@link IdempotencyStore.ping}); without it the check always passes. */
  ping?(): Promise<unknown>;
}

/**
 * Options of {@link createRedisStore}.
 *
 * @example
 * ```ts
 * const options: RedisStoreOptions = { client: new Redis(), prefix: 'shop:idempo:', notify: true };
 * const store = createRedisStore(options);
 * ```
 */
export interface RedisStoreOptions {
  /**
   * A connected ioredis `Redis` or `Cluster`. The store only runs its scripts on it; it never
   * opens, closes or logs on it, and `close()` leaves it open.
   *
   * For fail-fast behaviour while Redis is down (so the engine answers `503` at once instead of
   * holding requests), create it with:
   *
   * ```ts
   * new Redis(url, {
   *   enableOfflineQueue: false,            // reject commands while disconnected instead of queueing them
   *   maxRetriesPerRequest: 0,              // reject in-flight commands when the connection drops
   *   autoResendUnfulfilledCommands: false, // never replay a claim whose reply was lost
   *   connectTimeout: 1_000,
   *   commandTimeout: 1_000,                // a hung (not dead) server fails too
   *   retryStrategy: (attempt) => Math.min(attempt * 100, 1_000), // keep reconnecting
   * });
   * ```
   *
   * and wait for its `ready` event before serving. For a `Cluster`, pass
   * `enableOfflineQueue: false` to the Cluster and the settings above in `redisOptions`.
   */
  client: RedisStoreClient;
  /**
   * Prepended to every key and channel the store writes. Must not contain `{` or `}`: the store
   * adds its own hash tag so that each record's keys share one Cluster slot.
   * @default 'idempo:'
   */
  prefix?: string;
  /**
   * Whether duplicates waiting with `concurrent: 'wait'` subscribe to their key and are woken at
   * once by a PUBLISH from `complete` or `release`. Only a key someone waits on publishes (the
   * waiter marks the record), so this costs nothing on the others; with it off, waiters poll
   * every `pollIntervalMs`. On a Cluster, plain PUBLISH is relayed to every node.
   * @default true
   */
  notify?: boolean;
  /**
   * How often a waiting duplicate polls the record while pub/sub is unavailable (its connection
   * is still coming up or reconnecting), in ms. With pub/sub up, nothing polls.
   * @default 500
   */
  pollIntervalMs?: number;
}

/** Names of the scripts on the client. Versioned, so two idempo versions may share one client. */
const COMMANDS = {
  claim: 'idempoClaimV2',
  complete: 'idempoCompleteV2',
  release: 'idempoReleaseV2',
  renew: 'idempoRenewV2',
  saveStep: 'idempoSaveStepV2',
  peek: 'idempoPeekV2',
} as const;

type Reply = Buffer | string | number | null | Reply[];
type ScriptCall = (...args: (string | Buffer)[]) => Promise<Reply>;

/** The client once the scripts are defined on it: `defineCommand` adds a method per name, and `<name>Buffer`. */
type ScriptedClient = Record<string, ScriptCall>;

/** Two record keys, one hash tag: the whole record lives in one Cluster slot. */
interface RecordKeys {
  record: string;
  steps: string;
  channel: string;
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

function text(value: Reply | undefined): string {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (typeof value === 'string') return value;
  if (typeof value === 'number') return String(value);
  throw new IdempotencyStoreError(`Unexpected reply from Redis: ${String(value)}`);
}

function toBuffer(body: Uint8Array): Buffer {
  return Buffer.isBuffer(body) ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

function ms(value: number): string {
  return String(Math.max(1, Math.ceil(value)));
}

function storeError(operation: string, error: unknown): IdempotencyStoreError {
  if (error instanceof IdempotencyStoreError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  const hint = reason.startsWith('WRONGTYPE')
    ? ' (the key holds a record in the layout of idempo 0.1, a hash; see "Upgrading" in docs/stores/redis.md)'
    : '';
  return new IdempotencyStoreError(`Redis ${operation} failed: ${reason}${hint}`, { cause: error });
}

/** Redis before 7.0 rejects `SET … NX GET` as a syntax error. */
function isSyntaxError(error: unknown): boolean {
  return error instanceof Error && /^ERR syntax error/i.test(error.message);
}

/**
 * The token of a new record: the app server's clock in ms, times 1024, plus 10 random bits.
 * A script would use Redis's clock, but the plain claim has no script. Tokens still grow across
 * a key's lifetimes, as the store contract asks, unless two app servers' clocks differ by more
 * than the earlier lifetime's lease + ttl; and even then a stale owner's token equals the new
 * one only if the clocks differ by exactly that and the random bits agree. Below 2^53 until the
 * year 2248.
 */
function newToken(): number {
  return Date.now() * 1024 + Math.floor(Math.random() * 1024);
}

const COMPLETED = 0x43; // 'C'
const BAR = 0x7c; // '|'

/** What precedes the body in a completed record: `<status>|<header bytes>|<headers as JSON>`. */
function responseHead(response: StoredResponse): string {
  const headers = JSON.stringify(response.headers);
  return `${response.status}|${Buffer.byteLength(headers)}|${headers}`;
}

/**
 * A completed record, `C|<fingerprint bytes>|<fingerprint><status>|<header bytes>|<headers><body>`,
 * as the claim's answer: its response, or a mismatch if the fingerprint differs. The body is a
 * view of the reply, not a copy.
 */
function completedClaim(value: Reply | undefined, fingerprint: string): ClaimResult {
  if (!Buffer.isBuffer(value) || value[0] !== COMPLETED) {
    throw new IdempotencyStoreError(`Unexpected record in Redis: ${String(value).slice(0, 40)}`);
  }
  const fpEnd = value.indexOf(BAR, 2);
  const fpStart = fpEnd + 1;
  const statusStart = fpStart + Number(value.toString('latin1', 2, fpEnd));
  const statusEnd = value.indexOf(BAR, statusStart);
  const lengthEnd = statusEnd < 0 ? -1 : value.indexOf(BAR, statusEnd + 1);
  const headersEnd = lengthEnd + 1 + Number(value.toString('latin1', statusEnd + 1, lengthEnd));
  if (fpEnd < 0 || lengthEnd < 0 || !(headersEnd <= value.length)) {
    throw new IdempotencyStoreError('A stored response in Redis is cut short or malformed');
  }
  if (value.toString('utf8', fpStart, statusStart) !== fingerprint) return { status: 'mismatch' };
  return {
    status: 'replay',
    response: {
      status: Number(value.toString('latin1', statusStart, statusEnd)),
      headers: parseHeaders(value.toString('utf8', lengthEnd + 1, headersEnd)),
      body: value.subarray(headersEnd),
    },
  };
}

function parseHeaders(json: string): [string, string][] {
  try {
    return JSON.parse(json) as [string, string][];
  } catch (error) {
    throw new IdempotencyStoreError('A stored response in Redis has unreadable headers', { cause: error });
  }
}

function fenced(reply: Reply): FencedResult {
  const value = text(reply);
  if (value === 'ok' || value === 'stale') return value;
  throw new IdempotencyStoreError(`Unexpected reply from Redis: ${value}`);
}

/**
 * Creates a store that keeps idempo's records in Redis, standalone or Cluster, through your
 * ioredis client. A claim is one plain `SET … NX GET` and every other operation one atomic Lua
 * script, so a first request costs two round trips (claim, complete) and a replay one. Records
 * expire by Redis TTL, and a lease is its record's expiry, so app servers agree on it whatever
 * their own clocks say. Duplicates waiting with
 * `concurrent: 'wait'` are woken by pub/sub over a connection the store opens lazily with
 * `client.duplicate()` and closes in `close()`.
 *
 * @example
 * ```ts
 * import { Redis } from 'ioredis';
 * import { createIdempotency } from 'idempo';
 * import { createRedisStore } from 'idempo/redis';
 *
 * const client = new Redis(process.env.REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
 * const idem = createIdempotency({ store: createRedisStore({ client, prefix: 'payments:' }) });
 * ```
 *
 * @example
 * ```ts
 * import { Cluster } from 'ioredis';
 * const client = new Cluster([{ host: 'redis-1', port: 6379 }]);
 * const store = createRedisStore({ client });
 * ```
 */
export function createRedisStore({
  client,
  prefix = 'idempo:',
  notify = true,
  pollIntervalMs = 500,
}: RedisStoreOptions): IdempotencyStore {
  if (typeof client?.defineCommand !== 'function') {
    throw new IdempotencyConfigError('createRedisStore needs an ioredis Redis or Cluster client as `client`');
  }
  if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
    throw new IdempotencyConfigError(
      'createRedisStore: `prefix` must be a string without `{` or `}` (the store adds its own hash tag)',
    );
  }
  if (!(pollIntervalMs > 0)) {
    throw new IdempotencyConfigError('createRedisStore: `pollIntervalMs` must be a positive number');
  }

  client.defineCommand(COMMANDS.claim, { numberOfKeys: 2, lua: CLAIM_SCRIPT });
  client.defineCommand(COMMANDS.complete, { numberOfKeys: 2, lua: COMPLETE_SCRIPT });
  client.defineCommand(COMMANDS.release, { numberOfKeys: 2, lua: RELEASE_SCRIPT });
  client.defineCommand(COMMANDS.renew, { numberOfKeys: 2, lua: RENEW_SCRIPT });
  client.defineCommand(COMMANDS.saveStep, { numberOfKeys: 2, lua: SAVE_STEP_SCRIPT });
  client.defineCommand(COMMANDS.peek, { numberOfKeys: 1, lua: PEEK_SCRIPT });
  const scripted = client as unknown as ScriptedClient;
  const cork = socketCorker(client);

  function run(name: string, operation: string, args: (string | Buffer)[]): Promise<Reply> {
    const call = scripted[name];
    if (!call) return Promise.reject(new IdempotencyStoreError(`Redis script ${name} is not defined on the client`));
    cork();
    return call.apply(client, args).catch((error: unknown) => {
      throw storeError(operation, error);
    });
  }

  function keysOf(key: string): RecordKeys {
    const record = `${prefix}{${key}}`;
    return { record, steps: `${record}:steps`, channel: `${record}:changed` };
  }

  // Redis before 7.0 has no SET … NX GET: the first syntax error switches claims to the script.
  let plainClaims = true;

  /**
   * One plain `SET … NX GET` creates the record when the key is absent and otherwise returns it
   * unchanged, so a first request and a replay each cost Redis about what a GET does instead of
   * a script. Only a record in flight or released (whose lease the script reads from Redis's
   * clock, and which it may take over) goes on to CLAIM_SCRIPT.
   */
  async function claim(input: ClaimInput): Promise<ClaimResult> {
    const { record, steps } = keysOf(input.key);
    const ttl = ms(input.ttlMs);
    const keep = String(Number(ms(input.leaseMs)) + Number(ttl));
    const token = newToken();
    if (plainClaims) {
      let existing: unknown;
      try {
        cork();
        existing = await client.setBuffer(record, `I|${token}|${ttl}|0|${input.fingerprint}`, 'PX', keep, 'NX', 'GET');
      } catch (error) {
        if (!isSyntaxError(error)) throw storeError('claim', error);
        plainClaims = false;
      }
      if (plainClaims) {
        if (existing === null) return { status: 'acquired', token, steps: {}, recovered: false };
        if (Buffer.isBuffer(existing) && existing[0] === COMPLETED) return completedClaim(existing, input.fingerprint);
      }
    }
    const reply = await run(`${COMMANDS.claim}Buffer`, 'claim', [
      record,
      steps,
      input.fingerprint,
      ms(input.leaseMs),
      ttl,
      String(token),
    ]);
    if (!Array.isArray(reply)) throw new IdempotencyStoreError(`Unexpected claim reply from Redis: ${String(reply)}`);
    const status = text(reply[0]);
    switch (status) {
      case 'acquired': {
        const stepValues: Record<string, string> = {};
        for (let i = 3; i + 1 < reply.length; i += 2) stepValues[text(reply[i])] = text(reply[i + 1]);
        return { status, token: Number(text(reply[1])), steps: stepValues, recovered: text(reply[2]) === '1' };
      }
      case 'completed':
        return completedClaim(reply[1], input.fingerprint);
      case 'in_flight':
        return { status, retryAfterMs: Math.max(1, Number(text(reply[1]))) };
      case 'mismatch':
        return { status };
      default:
        throw new IdempotencyStoreError(`Unexpected claim reply from Redis: ${status}`);
    }
  }

  async function complete(key: string, token: number, response: StoredResponse, ttlMs: number): Promise<FencedResult> {
    const { record, steps, channel } = keysOf(key);
    return fenced(
      await run(COMMANDS.complete, 'complete', [
        record,
        steps,
        String(token),
        responseHead(response),
        toBuffer(response.body),
        ms(ttlMs),
        notify ? channel : '',
      ]),
    );
  }

  async function release(key: string, token: number, ttlMs: number): Promise<FencedResult> {
    const { record, steps, channel } = keysOf(key);
    return fenced(
      await run(COMMANDS.release, 'release', [record, steps, String(token), ms(ttlMs), notify ? channel : '']),
    );
  }

  async function renew(key: string, token: number, leaseMs: number): Promise<FencedResult> {
    const { record, steps } = keysOf(key);
    return fenced(await run(COMMANDS.renew, 'renew', [record, steps, String(token), ms(leaseMs)]));
  }

  async function saveStep(key: string, token: number, name: string, value: string): Promise<FencedResult> {
    const { record, steps } = keysOf(key);
    return fenced(await run(COMMANDS.saveStep, 'saveStep', [record, steps, String(token), name, value]));
  }

  /** Whether the record still has a live owner, and for how long its lease runs. */
  async function peek(key: string): Promise<{ live: boolean; leaseRemainingMs: number }> {
    // Marked only when this store listens: its subscription is up before it peeks (see PEEK_SCRIPT).
    const reply = await run(COMMANDS.peek, 'peek', [keysOf(key).record, notify ? '1' : '']);
    if (!Array.isArray(reply)) throw new IdempotencyStoreError(`Unexpected peek reply from Redis: ${String(reply)}`);
    const leaseRemainingMs = Number(text(reply[1]));
    return { live: text(reply[0]) === 'in_flight' && leaseRemainingMs > 0, leaseRemainingMs };
  }

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
    const sub = client.duplicate();
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
    if (closed) return new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(timeoutMs, pollIntervalMs))));
    const { channel } = keysOf(key);
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
      }, pollIntervalMs);
    });
  }

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    for (const entry of [...channels.values()]) for (const waiter of [...entry.waiters]) waiter.wake();
    channels.clear();
    subscriber?.disconnect();
  }

  /** A health check only: requests never wait on it. */
  async function ping(): Promise<void> {
    try {
      await client.ping?.();
    } catch (error) {
      throw storeError('ping', error);
    }
  }

  return { claim, complete, release, renew, saveStep, waitForChange, close, ping };
}

/** A connection whose socket the store may cork: an ioredis `Redis`, standalone or a Cluster's node. */
interface WithStream {
  stream?: Writable;
}

/**
 * Returns a function that holds the client's socket writes until the event loop's check phase.
 * ioredis writes each command to the socket at once, one system call and one wake-up of Redis
 * per command. Corked until `setImmediate`, every command issued while the loop handles one
 * batch of ready sockets (many requests' claims and completions) leaves in one write, and their
 * replies tend to come back in one read, as node-redis batches its writes. See
 * bench/results/ANALYSIS.md for the measurements. A Cluster client has a connection per node,
 * and every node's socket is held alike.
 */
function socketCorker(client: RedisStoreClient): () => void {
  const nodes = (client as { nodes?: (role: 'all') => WithStream[] }).nodes;
  let corked: Writable[] | undefined;

  function uncork(): void {
    const streams = corked ?? [];
    corked = undefined;
    for (const stream of streams) stream.uncork();
  }

  function hold(stream: Writable | undefined, into: Writable[]): void {
    if (stream === undefined || typeof stream.cork !== 'function' || stream.writableCorked > 0) return;
    stream.cork();
    into.push(stream);
  }

  return function cork(): void {
    if (corked !== undefined) return;
    corked = [];
    if (typeof nodes === 'function') for (const node of nodes.call(client, 'all')) hold(node.stream, corked);
    else hold((client as WithStream).stream, corked);
    setImmediate(uncork);
  };
}
