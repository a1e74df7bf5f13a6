/**
 * The Redis store: records in Redis (standalone or Cluster) through the user's own ioredis client.
 *
 * @module
 */
import {
  type ClaimInput,
  type ClaimResult,
  type Duration,
  type FencedResult,
  IdempotencyConfigError,
  type IdempotencyStore,
  IdempotencyStoreError,
  parseDuration,
  type StoredResponse,
} from '../vocabulary/index.js';
import { socketCorker } from './redis-corker.js';
import {
  COMPLETED,
  completedClaim,
  fenced,
  ms,
  newToken,
  type Reply,
  responseHead,
  text,
  toBuffer,
} from './redis-record.js';
import {
  CLAIM_SCRIPT,
  COMPLETE_SCRIPT,
  PEEK_SCRIPT,
  RELEASE_SCRIPT,
  RENEW_SCRIPT,
  SAVE_STEP_SCRIPT,
} from './redis-scripts.js';
import { createChangeWaiter, type RedisStoreSubscriber } from './redis-waiting.js';

export type { RedisStoreSubscriber } from './redis-waiting.js';

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
   * every `pollInterval`. On a Cluster, plain PUBLISH is relayed to every node.
   * @default true
   */
  notify?: boolean;
  /**
   * How often a waiting duplicate polls the record while pub/sub is unavailable (its connection
   * is still coming up or reconnecting). With pub/sub up, nothing polls.
   * @default '500ms'
   */
  pollInterval?: Duration;
  /**
   * The same as `pollInterval`, in ms.
   * @deprecated Use `pollInterval`, named as in the other stores.
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

type ScriptCall = (...args: (string | Buffer)[]) => Promise<Reply>;

/** The client once the scripts are defined on it: `defineCommand` adds a method per name, and `<name>Buffer`. */
type ScriptedClient = Record<string, ScriptCall>;

/** Two record keys, one hash tag: the whole record lives in one Cluster slot. */
interface RecordKeys {
  record: string;
  steps: string;
  channel: string;
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
  pollInterval,
  pollIntervalMs,
}: RedisStoreOptions): IdempotencyStore {
  if (typeof client?.defineCommand !== 'function') {
    throw new IdempotencyConfigError('createRedisStore needs an ioredis Redis or Cluster client as `client`');
  }
  if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
    throw new IdempotencyConfigError(
      'createRedisStore: `prefix` must be a string without `{` or `}` (the store adds its own hash tag)',
    );
  }
  const pollMs =
    pollInterval === undefined && pollIntervalMs !== undefined
      ? parseDuration(pollIntervalMs, 'pollIntervalMs')
      : parseDuration(pollInterval ?? '500ms', 'pollInterval');

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

  const waiter = createChangeWaiter({
    openSubscriber: () => client.duplicate(),
    notify,
    pollMs,
    channelOf: (key) => keysOf(key).channel,
    peek,
  });

  async function close(): Promise<void> {
    waiter.close();
  }

  /** A health check only: requests never wait on it. */
  async function ping(): Promise<void> {
    try {
      await client.ping?.();
    } catch (error) {
      throw storeError('ping', error);
    }
  }

  return { claim, complete, release, renew, saveStep, waitForChange: waiter.waitForChange, close, ping };
}
