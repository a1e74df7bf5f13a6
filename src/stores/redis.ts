/**
 * The Redis store: records in Redis (standalone or Cluster) through the user's own ioredis or
 * node-redis client.
 *
 * @module
 */
import {
  type ClaimInput,
  type ClaimResult,
  type Duration,
  type FencedResult,
  IdempotencyConfigInvalidError,
  type IdempotencyStore,
  IdempotencyStoreUnavailableError,
  parseDuration,
  type StoredResponse,
} from '../vocabulary/index.js';
import { socketCorker } from './redis-corker.js';
import { isNodeRedis, type NodeRedisClient, type NodeRedisCluster, nodeRedisStoreClient } from './redis-node-client.js';
import { createRedisOperations } from './redis-operations.js';
import {
  bodyArgument,
  COMPLETED,
  completedClaim,
  fenced,
  ms,
  newToken,
  type Reply,
  responseHead,
  text,
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

export type {
  NodeRedisClient,
  NodeRedisClientBatch,
  NodeRedisClientCommands,
  NodeRedisCluster,
  NodeRedisClusterCommands,
  NodeRedisClusterNodeClient,
  NodeRedisClusterSubscriber,
  NodeRedisSubscriber,
} from './redis-node-client.js';
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
  /**
   * A pipeline, used only with {@link RedisStoreOptions.replicaAck}: the write and its `WAIT`
   * leave in one pipeline, so they reach the same node over the same connection.
   */
  pipeline?(): RedisStorePipeline;
}

/**
 * The part of an ioredis pipeline the store uses with {@link RedisStoreOptions.replicaAck}: a
 * write, then `WAIT`. On a `Cluster`, ioredis sends a pipeline to the node that serves its keys'
 * slot, keyless `WAIT` included, and fails it as a whole rather than re-send it elsewhere once
 * one of its writes succeeded.
 *
 * @example
 * ```ts
 * const pipeline: RedisStorePipeline = new Redis().pipeline();
 * ```
 */
export interface RedisStorePipeline {
  setBuffer(key: string, value: string, px: 'PX', milliseconds: string, nx: 'NX', get: 'GET'): unknown;
  /** `EVAL` with a Buffer reply (ioredis has it, though its types leave it out). */
  evalBuffer?(script: string, numberOfKeys: number, ...args: (string | Buffer)[]): unknown;
  wait(replicas: number, timeoutMs: number): unknown;
  exec(): Promise<[Error | null, unknown][] | null>;
}

/**
 * How many replicas must acknowledge idempo's writes, and how long the master waits for them.
 *
 * @example
 * ```ts
 * const ack: RedisReplicaAck = { replicas: 1, timeout: '100ms' };
 * ```
 */
export interface RedisReplicaAck {
  /** Replicas that must have received a write before it counts. At least 1. */
  replicas: number;
  /**
   * How long the master waits for them (`WAIT`'s timeout) before the write counts as not
   * acknowledged. More than 0 (`WAIT … 0` would wait forever), and less than the client's
   * `commandTimeout`.
   * @default '100ms'
   */
  timeout?: Duration;
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
   * A connected ioredis `Redis` or `Cluster`, or a connected node-redis (`redis` 5 or later)
   * client from `createClient()` or cluster from `createCluster()`. The store only runs its
   * scripts on it; it never opens, closes or logs on it, and `close()` leaves it open.
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
   *
   * With node-redis, connect it first and create it with:
   *
   * ```ts
   * createClient({
   *   url,
   *   disableOfflineQueue: true,             // reject commands while disconnected instead of queueing them
   *   commandOptions: { timeout: 1_000 },    // a hung (not dead) server fails too
   *   socket: { connectTimeout: 1_000, reconnectStrategy: (retries) => Math.min(retries * 100, 1_000) },
   * });
   * ```
   *
   * and for a cluster, `createCluster({ rootNodes, defaults: { disableOfflineQueue: true, socket: … },
   * commandOptions: { timeout: 1_000 } })`. See docs/stores/redis.md.
   */
  client: RedisStoreClient | NodeRedisClient | NodeRedisCluster;
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
  /**
   * Makes every write that gives a run its key or keeps its result (claim, renew, saveStep,
   * complete) wait for replicas: the store sends `WAIT replicas timeout` in the same pipeline, to
   * the same node, as the write. A claim that too few replicas acknowledged is not acquired: the
   * store gives the key back (released, or its lease left lapsed if the claim recovered it) and
   * throws, so the engine answers `503` with `Retry-After` before any handler runs. A replay
   * likewise needs the acknowledgement (it covers this connection's earlier writes, among them
   * this app server's own completion). A completion, renewal or step not acknowledged throws:
   * the engine keeps the key and retries (the unknown-outcome rule), and never answers with a
   * success that a replica might not have. Each such write then blocks its connection for one
   * round trip to a replica, longer while a replica lags; see docs/stores/redis.md for what it
   * costs and what it guarantees at a failover.
   * @default undefined (no `WAIT`: a write counts once the master has it)
   */
  replicaAck?: RedisReplicaAck;
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

function storeError(operation: string, error: unknown): IdempotencyStoreUnavailableError {
  if (error instanceof IdempotencyStoreUnavailableError) return error;
  const reason = error instanceof Error ? error.message : String(error);
  const hint = reason.startsWith('WRONGTYPE')
    ? ' (the key holds a record in the layout of idempo 0.1, a hash; see "Upgrading" in docs/stores/redis.md)'
    : '';
  return new IdempotencyStoreUnavailableError(`Redis ${operation} failed: ${reason}${hint}`, { cause: error });
}

/** Queues `EVAL script 2 …args` on `pipeline`, replying in Buffers. */
function evalIn(pipeline: RedisStorePipeline, script: string, args: (string | Buffer)[]): void {
  if (typeof pipeline.evalBuffer !== 'function') {
    throw new IdempotencyStoreUnavailableError('replicaAck needs an ioredis pipeline with evalBuffer()');
  }
  pipeline.evalBuffer(script, 2, ...args);
}

/** {@link RedisReplicaAck} resolved: `timeout` in ms. */
interface ReplicaAck {
  replicas: number;
  timeoutMs: number;
}

function replicaAckOf(client: RedisStoreClient, option: RedisReplicaAck | undefined): ReplicaAck | undefined {
  if (option === undefined) return undefined;
  const replicas = option?.replicas;
  if (!Number.isInteger(replicas) || replicas < 1) {
    throw new IdempotencyConfigInvalidError('createRedisStore: `replicaAck.replicas` must be an integer of at least 1');
  }
  const timeoutMs = parseDuration(option.timeout ?? '100ms', 'replicaAck.timeout');
  if (!(timeoutMs >= 1)) {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore: `replicaAck.timeout` must be at least 1 ms (WAIT with 0 waits forever)',
    );
  }
  if (typeof client.pipeline !== 'function') {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore: `replicaAck` needs a client with `pipeline()` (an ioredis Redis or Cluster)',
    );
  }
  return { replicas, timeoutMs: Math.ceil(timeoutMs) };
}

/** A Cluster node's answer for a slot it no longer serves. */
function isMoved(error: unknown): boolean {
  return error instanceof Error && error.message.startsWith('MOVED ');
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
  client: given,
  prefix = 'idempo:',
  notify = true,
  pollInterval,
  pollIntervalMs,
  replicaAck,
}: RedisStoreOptions): IdempotencyStore {
  const nodeRedis = isNodeRedis(given);
  if (!nodeRedis && typeof (given as RedisStoreClient | undefined)?.defineCommand !== 'function') {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore needs an ioredis Redis or Cluster client, or a connected node-redis client or cluster, as `client`',
    );
  }
  if (typeof prefix !== 'string' || /[{}]/.test(prefix)) {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore: `prefix` must be a string without `{` or `}` (the store adds its own hash tag)',
    );
  }
  // node-redis goes behind the ioredis calls below; an ioredis client is used as it is.
  const client: RedisStoreClient = nodeRedis
    ? nodeRedisStoreClient(given as object, `${prefix}subscriber`)
    : (given as RedisStoreClient);
  const pollMs =
    pollInterval === undefined && pollIntervalMs !== undefined
      ? parseDuration(pollIntervalMs, 'pollIntervalMs')
      : parseDuration(pollInterval ?? '500ms', 'pollInterval');

  const ack = replicaAckOf(client, replicaAck);

  client.defineCommand(COMMANDS.claim, { numberOfKeys: 2, lua: CLAIM_SCRIPT });
  client.defineCommand(COMMANDS.complete, { numberOfKeys: 2, lua: COMPLETE_SCRIPT });
  client.defineCommand(COMMANDS.release, { numberOfKeys: 2, lua: RELEASE_SCRIPT });
  client.defineCommand(COMMANDS.renew, { numberOfKeys: 2, lua: RENEW_SCRIPT });
  client.defineCommand(COMMANDS.saveStep, { numberOfKeys: 2, lua: SAVE_STEP_SCRIPT });
  client.defineCommand(COMMANDS.peek, { numberOfKeys: 1, lua: PEEK_SCRIPT });
  const scripted = client as unknown as ScriptedClient;
  // node-redis already sends the commands of one turn of the event loop in one write.
  const cork = nodeRedis ? () => {} : socketCorker(client);

  /**
   * `write` and `WAIT` in one pipeline: one write to one node's socket, so the `WAIT` counts the
   * replicas that have this write (and the connection's earlier ones) and no other node's. Scripts
   * go as `EVAL` with their text, not as the `EVALSHA` of `defineCommand`: ioredis re-sends an
   * `EVALSHA` that met `NOSCRIPT` outside its pipeline, after the `WAIT`, which would then not
   * cover it.
   */
  async function pipelined(
    acked: ReplicaAck,
    operation: string,
    record: string,
    write: (pipeline: RedisStorePipeline) => void,
    redirected = false,
  ): Promise<{ reply: Reply; replicas: number }> {
    const pipeline = (client.pipeline as () => RedisStorePipeline).call(client);
    write(pipeline);
    pipeline.wait(acked.replicas, acked.timeoutMs);
    cork();
    let results: [Error | null, unknown][] | null;
    try {
      results = await pipeline.exec();
    } catch (error) {
      throw storeError(operation, error);
    }
    const [written, waited] = results ?? [];
    if (!written || !waited)
      throw new IdempotencyStoreUnavailableError(`Redis ${operation} failed: the pipeline had no reply`);
    if (written[0] && !redirected && isMoved(written[0])) {
      // The slot has a new master (a failover) and this client's map is stale. ioredis retries a
      // pipeline after MOVED only when every command in it met the same error, and WAIT, which
      // has no key, answers from the old node, so it neither retries nor refreshes its map (and
      // node-redis follows MOVED for single commands only); with every write pipelined, nothing
      // else would, and the shard's keys would be refused until some other command met MOVED.
      // One keyed read (PEEK) follows the redirection and updates the map, and the pipeline goes
      // again: MOVED means the node wrote nothing.
      await run(COMMANDS.peek, operation, [record, '']).catch(() => undefined);
      return pipelined(acked, operation, record, write, true);
    }
    if (written[0]) throw storeError(operation, written[0]);
    // A WAIT that failed (a demoted master refuses it) acknowledged nothing.
    return { reply: written[1] as Reply, replicas: waited[0] ? 0 : Number(waited[1]) };
  }

  /** Throws when a write that gives or keeps a result was seen by too few replicas. */
  function notAcknowledged(
    acked: ReplicaAck,
    operation: string,
    replicas: number,
    what: string,
  ): IdempotencyStoreUnavailableError {
    return new IdempotencyStoreUnavailableError(
      `Redis ${operation} was acknowledged by ${replicas} of the ${acked.replicas} replicas it needs within ${acked.timeoutMs} ms (replicaAck): ${what}`,
    );
  }

  async function runScript(name: string, script: string, operation: string, args: (string | Buffer)[]): Promise<Reply> {
    if (ack === undefined) return run(name, operation, args);
    const { reply, replicas } = await pipelined(ack, operation, String(args[0]), (p) => evalIn(p, script, args));
    const result = fenced(reply);
    if (result === 'ok' && replicas < ack.replicas) {
      throw notAcknowledged(ack, operation, replicas, 'its outcome is unknown');
    }
    return reply;
  }

  function run(name: string, operation: string, args: (string | Buffer)[]): Promise<Reply> {
    const call = scripted[name];
    if (!call)
      return Promise.reject(new IdempotencyStoreUnavailableError(`Redis script ${name} is not defined on the client`));
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
      let replicas = Number.POSITIVE_INFINITY;
      const value = `I|${token}|${ttl}|0|${input.fingerprint}`;
      try {
        if (ack === undefined) {
          cork();
          existing = await client.setBuffer(record, value, 'PX', keep, 'NX', 'GET');
        } else {
          ({ reply: existing, replicas } = await pipelined(ack, 'claim', record, (p) =>
            p.setBuffer(record, value, 'PX', keep, 'NX', 'GET'),
          ));
        }
      } catch (error) {
        if (!isSyntaxError(error) && !isSyntaxError((error as { cause?: unknown }).cause)) {
          throw storeError('claim', error);
        }
        plainClaims = false;
      }
      if (plainClaims) {
        if (existing === null)
          return acknowledged(input, { status: 'acquired', token, steps: {}, recovered: false }, replicas);
        if (Buffer.isBuffer(existing) && existing[0] === COMPLETED) {
          return acknowledged(input, completedClaim(existing, input.fingerprint), replicas);
        }
      }
    }
    const args = [record, steps, input.fingerprint, ms(input.leaseMs), ttl, String(token)];
    let reply: Reply;
    let replicas = Number.POSITIVE_INFINITY;
    if (ack === undefined) reply = await run(`${COMMANDS.claim}Buffer`, 'claim', args);
    else ({ reply, replicas } = await pipelined(ack, 'claim', record, (p) => evalIn(p, CLAIM_SCRIPT, args)));
    if (!Array.isArray(reply))
      throw new IdempotencyStoreUnavailableError(`Unexpected claim reply from Redis: ${String(reply)}`);
    const status = text(reply[0]);
    switch (status) {
      case 'acquired': {
        const stepValues: Record<string, string> = {};
        for (let i = 3; i + 1 < reply.length; i += 2) stepValues[text(reply[i])] = text(reply[i + 1]);
        const acquired = {
          status,
          token: Number(text(reply[1])),
          steps: stepValues,
          recovered: text(reply[2]) === '1',
        };
        return acknowledged(input, acquired, replicas);
      }
      case 'completed':
        return acknowledged(input, completedClaim(reply[1], input.fingerprint), replicas);
      case 'in_flight':
        return { status, retryAfterMs: Math.max(1, Number(text(reply[1]))) };
      case 'mismatch':
        return { status };
      default:
        throw new IdempotencyStoreUnavailableError(`Unexpected claim reply from Redis: ${status}`);
    }
  }

  /**
   * With `replicaAck`, a claim that acquires or replays stands only if enough replicas have the
   * writes behind it. An acquired key that they lack is given back before the claim fails: nothing
   * ran under it, so it is released, or, if it recovered a lapsed lease, left lapsed (a later claim
   * recovers it as such, and the gateway still marks the re-drive). Giving back is best effort: if
   * it fails too, the record, which may exist on the master alone, holds the key in flight until
   * its lease runs out, and duplicates get `409` meanwhile; nothing runs twice either way.
   */
  async function acknowledged(input: ClaimInput, result: ClaimResult, replicas: number): Promise<ClaimResult> {
    if (ack === undefined || replicas >= ack.replicas) return result;
    if (result.status === 'acquired') {
      const giveBack = result.recovered
        ? renewLease(input.key, result.token, 1, false)
        : release(input.key, result.token, input.ttlMs);
      await giveBack.catch(() => undefined);
      throw notAcknowledged(ack, 'claim', replicas, 'the key was not acquired and nothing ran');
    }
    throw notAcknowledged(ack, 'claim', replicas, 'the stored response is not replayed until they have it');
  }

  async function complete(key: string, token: number, response: StoredResponse, ttlMs: number): Promise<FencedResult> {
    const { record, steps, channel } = keysOf(key);
    return fenced(
      await runScript(COMMANDS.complete, COMPLETE_SCRIPT, 'complete', [
        record,
        steps,
        String(token),
        responseHead(response),
        bodyArgument(response.body),
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

  function renew(key: string, token: number, leaseMs: number): Promise<FencedResult> {
    return renewLease(key, token, leaseMs, true);
  }

  /** RENEW; with `acked` false, without `WAIT` even under `replicaAck` (a claim given back). */
  async function renewLease(key: string, token: number, leaseMs: number, acked: boolean): Promise<FencedResult> {
    const { record, steps } = keysOf(key);
    const args = [record, steps, String(token), ms(leaseMs)];
    return fenced(
      acked ? await runScript(COMMANDS.renew, RENEW_SCRIPT, 'renew', args) : await run(COMMANDS.renew, 'renew', args),
    );
  }

  async function saveStep(key: string, token: number, name: string, value: string): Promise<FencedResult> {
    const { record, steps } = keysOf(key);
    return fenced(
      await runScript(COMMANDS.saveStep, SAVE_STEP_SCRIPT, 'saveStep', [record, steps, String(token), name, value]),
    );
  }

  /** Whether the record still has a live owner, and for how long its lease runs. */
  async function peek(key: string): Promise<{ live: boolean; leaseRemainingMs: number }> {
    // Marked only when this store listens: its subscription is up before it peeks (see PEEK_SCRIPT).
    const reply = await run(COMMANDS.peek, 'peek', [keysOf(key).record, notify ? '1' : '']);
    if (!Array.isArray(reply))
      throw new IdempotencyStoreUnavailableError(`Unexpected peek reply from Redis: ${String(reply)}`);
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

  return {
    claim,
    complete,
    release,
    renew,
    saveStep,
    waitForChange: waiter.waitForChange,
    close,
    ping,
    ...createRedisOperations({ client, prefix, keysOf }),
  };
}
