/**
 * node-redis (the `redis` package, 5 and later) as the Redis store's client: a standalone client
 * from `createClient()` or a cluster from `createCluster()`, put behind the few ioredis calls the
 * store makes, so that the store runs the same scripts and commands on either library.
 *
 * Typed structurally, like the ioredis side: idempo's runtime never imports `redis`, and its
 * declarations name no type of it.
 *
 * @module
 */
import { createHash } from 'node:crypto';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';
import type { Reply } from './redis-record.js';
import type { RedisStoreSubscriber } from './redis-waiting.js';

/** An argument of a raw command. */
type Arg = string | Buffer;

/** What node-redis calls with a message: `(message, channel)`, strings unless subscribed in buffer mode. */
type MessageListener = (message: string | Buffer, channel: string | Buffer) => unknown;

/**
 * The RESP type code of a bulk string, which node-redis replies as a `string` unless a type
 * mapping says `Buffer`. Stored records and bodies are bytes, so the store reads them as Buffers.
 */
const BLOB_STRING = 36;

/** node-redis's type mapping for replies in bytes, as `RESP_TYPES.BLOB_STRING: Buffer` writes it. */
const AS_BUFFERS = { [BLOB_STRING]: Buffer } as const;

/** No mapping: node-redis's defaults, bulk strings as strings, whatever mapping the client was created with. */
const AS_STRINGS = {} as const;

/**
 * How long the store waits for a reply when the client sets no `commandOptions.timeout`:
 * node-redis's own default for that option.
 */
const DEFAULT_REPLY_TIMEOUT_MS = 5_000;

/**
 * The batch `multi()` returns on a node-redis client, sent with `execAsPipeline()`: every
 * command in one write, over the client's one connection.
 *
 * @example
 * ```ts
 * const batch: NodeRedisClientBatch = client.multi();
 * ```
 */
export interface NodeRedisClientBatch {
  addCommand(args: Arg[]): NodeRedisClientBatch;
  execAsPipeline(): Promise<unknown[]>;
}

/**
 * What the store calls on a node-redis client, or on the view of it `withTypeMapping` returns.
 *
 * @example
 * ```ts
 * const commands: NodeRedisClientCommands = client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
 * ```
 */
export interface NodeRedisClientCommands {
  sendCommand(args: Arg[]): Promise<unknown>;
  multi(): NodeRedisClientBatch;
}

/**
 * The connection the store opens for pub/sub with `duplicate()` on a node-redis client.
 *
 * @example
 * ```ts
 * const subscriber: NodeRedisSubscriber = client.duplicate();
 * ```
 */
export interface NodeRedisSubscriber {
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  subscribe(channels: string[], listener: MessageListener): Promise<unknown>;
  unsubscribe(channels: string[], listener: MessageListener): Promise<unknown>;
  on(event: 'ready' | 'error', listener: (...args: unknown[]) => void): unknown;
  destroy(): unknown;
}

/**
 * The part of a node-redis (5 or later) standalone client, `createClient()`, the store uses.
 * Pass it connected (`await client.connect()`); the store never connects, closes or logs on it.
 *
 * @example
 * ```ts
 * import { createClient } from 'redis';
 * const client: NodeRedisClient = await createClient({ url: process.env.REDIS_URL }).connect();
 * ```
 */
export interface NodeRedisClient extends NodeRedisClientCommands {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  /** The client's options: the store waits for its replies at most the client's `commandOptions.timeout`. */
  readonly options?: { commandOptions?: { timeout?: number } } | undefined;
  withTypeMapping(mapping: typeof AS_BUFFERS | typeof AS_STRINGS): NodeRedisClientCommands;
  duplicate(): NodeRedisSubscriber;
}

/**
 * What the store calls on a node-redis cluster, or on the view of it `withTypeMapping` returns.
 *
 * @example
 * ```ts
 * const commands: NodeRedisClusterCommands = cluster.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer });
 * ```
 */
export interface NodeRedisClusterCommands {
  sendCommand(firstKey: Arg | undefined, isReadonly: boolean | undefined, args: Arg[]): Promise<unknown>;
}

/**
 * A connection to one node of a node-redis cluster, from `nodeClient()`: the store sends `SCAN`
 * to each master on it, and with `replicaAck` a write and its `WAIT` as one pipeline to the
 * master of the write's slot.
 *
 * @example
 * ```ts
 * const node: NodeRedisClusterNodeClient = await cluster.nodeClient(cluster.masters[0]!);
 * ```
 */
export interface NodeRedisClusterNodeClient {
  sendCommand(args: Arg[]): Promise<unknown>;
  withTypeMapping(mapping: typeof AS_BUFFERS | typeof AS_STRINGS): NodeRedisClientCommands;
}

/** A master of a node-redis cluster, as `masters` and `slots` list it. */
interface ClusterMaster {
  readonly address: string;
}

/**
 * The pub/sub connection the store opens with `duplicate()` on a node-redis cluster: a cluster
 * client of its own whose `subscribe` uses one node (any node hears a plain `PUBLISH`) and moves
 * to another when that node leaves the cluster.
 *
 * @example
 * ```ts
 * const subscriber: NodeRedisClusterSubscriber = cluster.duplicate({ minimizeConnections: true });
 * ```
 */
export interface NodeRedisClusterSubscriber {
  readonly isReady: boolean;
  /** The node its subscriptions live on, once it subscribed. */
  readonly pubSubNode?: { readonly client: { readonly isReady: boolean } } | undefined;
  connect(): Promise<unknown>;
  subscribe(channels: string[], listener: MessageListener): Promise<unknown>;
  unsubscribe(channels: string[], listener: MessageListener): Promise<unknown>;
  on(event: 'node-ready' | 'error', listener: (...args: unknown[]) => void): unknown;
  destroy(): unknown;
}

/**
 * The part of a node-redis (5 or later) cluster, `createCluster()`, the store uses. Pass it
 * connected (`await cluster.connect()`); the store never connects, closes or logs on it.
 *
 * @example
 * ```ts
 * import { createCluster } from 'redis';
 * const cluster: NodeRedisCluster = await createCluster({ rootNodes: [{ url: 'redis://redis-1:6379' }] }).connect();
 * ```
 */
export interface NodeRedisCluster extends NodeRedisClusterCommands {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  readonly masters: readonly ClusterMaster[];
  /** The 16384 slots, each with its master. */
  readonly slots: readonly { readonly master: ClusterMaster }[];
  nodeClient(node: ClusterMaster): Promise<NodeRedisClusterNodeClient>;
  withTypeMapping(mapping: typeof AS_BUFFERS | typeof AS_STRINGS): NodeRedisClusterCommands;
  duplicate(overrides?: { minimizeConnections?: boolean }): NodeRedisClusterSubscriber;
}

/** The ioredis pipeline the store uses with `replicaAck`, as this module provides it. */
interface StorePipeline {
  setBuffer(key: string, value: string, px: 'PX', milliseconds: string, nx: 'NX', get: 'GET'): void;
  evalBuffer(script: string, numberOfKeys: number, ...args: Arg[]): void;
  wait(replicas: number, timeoutMs: number): void;
  exec(): Promise<[Error | null, unknown][]>;
}

/** One master of a cluster, for the operations' `SCAN`. */
interface ScanConnection {
  scan(cursor: string, ...args: (string | number)[]): Promise<[string, string[]]>;
}

/**
 * The ioredis calls the store and its operations make (`redis.ts`, `redis-operations.ts`), made
 * on node-redis. Scripts are defined with `defineCommand`, which adds `<name>` (string replies)
 * and `<name>Buffer` (bulk strings as Buffers) methods, as ioredis does.
 */
export interface NodeRedisStoreClient extends ScanConnection {
  defineCommand(name: string, definition: { numberOfKeys: number; lua: string }): void;
  setBuffer(key: string, value: string, px: 'PX', milliseconds: string, nx: 'NX', get: 'GET'): Promise<Buffer | null>;
  duplicate(): RedisStoreSubscriber;
  ping(): Promise<unknown>;
  pipeline(): StorePipeline;
  evalBuffer(script: string, numberOfKeys: number, ...args: Arg[]): Promise<Reply>;
  /** On a cluster only: every master, for `SCAN`. */
  nodes?(role: 'master'): ScanConnection[];
}

/**
 * Whether `client` is a node-redis client or cluster rather than an ioredis one. ioredis has a
 * `sendCommand` too, but only ioredis has `defineCommand`.
 */
export function isNodeRedis(client: unknown): boolean {
  const candidate = client as { sendCommand?: unknown; defineCommand?: unknown } | null | undefined;
  return typeof candidate?.sendCommand === 'function' && typeof candidate.defineCommand !== 'function';
}

/**
 * Puts a node-redis client or cluster behind the ioredis calls of the store. Throws
 * {@link IdempotencyConfigInvalidError} for what node-redis offers but the store cannot use: a
 * client of node-redis 4, a pool, a Sentinel client, or a client not connected.
 *
 * @param keepAliveChannel on a cluster, a channel the store's subscriber stays subscribed to, so
 *   that node-redis keeps its pub/sub connection between waits (it closes it with the last
 *   channel).
 */
export function nodeRedisStoreClient(client: object, keepAliveChannel: string): NodeRedisStoreClient {
  const given = client as Record<string, unknown>;
  const has = (name: string) => typeof given[name] === 'function';
  if (has('acquire') || has('getMasterNode')) {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore: a node-redis Sentinel client is not supported; pass a client (createClient) or a cluster (createCluster), or use ioredis with Sentinel',
    );
  }
  if (!has('withTypeMapping')) {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore: this node-redis client has no withTypeMapping(): node-redis 4 (or a legacy-mode client) is not supported; use redis 5 or later, or ioredis',
    );
  }
  if (!has('duplicate') || !has('multi')) {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore: a node-redis client pool is not supported; pass a client (createClient) or a cluster (createCluster)',
    );
  }
  if (given.isOpen !== true) {
    throw new IdempotencyConfigInvalidError(
      'createRedisStore: the node-redis client is not connected; call `client.connect()` before creating the store (the store never connects or closes your client)',
    );
  }
  return has('nodeClient') && Array.isArray(given.masters)
    ? clusterStoreClient(client as NodeRedisCluster, keepAliveChannel)
    : standaloneStoreClient(client as NodeRedisClient);
}

/** Scripts by name, with the SHA1 that `EVALSHA` names them by. */
interface Script {
  numberOfKeys: number;
  lua: string;
  sha: string;
}

function isError(error: unknown, prefix: string): boolean {
  return error instanceof Error && error.message.startsWith(prefix);
}

/**
 * `EVALSHA`, and on `NOSCRIPT` (a server that never saw the script, or flushed its cache) the
 * same call as `EVAL` with the script's text, which caches it for the next `EVALSHA`. A script
 * that met `NOSCRIPT` did not run, so sending it again cannot run it twice.
 */
async function evalSha(
  send: (args: Arg[]) => Promise<unknown>,
  script: Script,
  args: readonly Arg[],
): Promise<unknown> {
  const rest = [String(script.numberOfKeys), ...args];
  try {
    return await send(['EVALSHA', script.sha, ...rest]);
  } catch (error) {
    if (!isError(error, 'NOSCRIPT')) throw error;
    return send(['EVAL', script.lua, ...rest]);
  }
}

/** `SCAN`'s reply, `[cursor, keys]`, in strings whatever the connection's type mapping. */
function scanReply(reply: unknown): [string, string[]] {
  const [cursor, keys] = reply as [Arg, Arg[]];
  return [String(cursor), keys.map(String)];
}

/**
 * Rejects when `promise` has not settled within `ms`. node-redis's `commandOptions.timeout` only
 * times out a command not yet written to the socket (and not a pipeline's commands at all): a
 * server that hangs after it took the command would hold it for as long as the connection
 * lives. ioredis's `commandTimeout` waits for the reply; the store holds node-redis's option to
 * that meaning too, so that a hung server fails fast (`503`) rather than holding requests. The
 * command's outcome is then unknown, as with ioredis: the store reports the error and never
 * sends it again.
 */
function within<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Redis did not reply within ${ms} ms (commandOptions.timeout)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The commands the store queues for one pipeline, and the key that routes it (its first). */
function collectingPipeline(send: (key: Arg | undefined, commands: Arg[][]) => Promise<unknown[]>): StorePipeline {
  const commands: Arg[][] = [];
  let key: Arg | undefined;
  return {
    setBuffer(recordKey, value, px, milliseconds, nx, get) {
      key ??= recordKey;
      commands.push(['SET', recordKey, value, px, milliseconds, nx, get]);
    },
    evalBuffer(script, numberOfKeys, ...args) {
      // EVAL with the text, never EVALSHA: a NOSCRIPT retry would leave the pipeline and its WAIT.
      key ??= args[0];
      commands.push(['EVAL', script, String(numberOfKeys), ...args]);
    },
    wait(replicas, timeoutMs) {
      commands.push(['WAIT', String(replicas), String(timeoutMs)]);
    },
    async exec() {
      // node-redis fails a pipeline as a whole with its first error, where ioredis answers each
      // command: an error here is the write's own or leaves its outcome unknown, and the store
      // treats it as the write's.
      let replies: unknown[];
      try {
        replies = await send(key, commands);
      } catch (error) {
        // MOVED (a failover moved the slot) can only be the write's, since WAIT has no key: it is
        // answered as ioredis answers it, the write's error beside WAIT's reply, so the store
        // follows the slot's new master as it does on ioredis (node-redis follows MOVED by itself
        // for single commands only).
        if (!isError(error, 'MOVED')) throw error;
        return commands.map((_, i): [Error | null, unknown] => (i === 0 ? [error as Error, null] : [null, 0]));
      }
      return replies.map((reply): [Error | null, unknown] => [null, reply]);
    },
  };
}

/**
 * What the store calls on a client, besides the script methods `defineCommand` adds: the shape
 * both the standalone and the cluster version fill in.
 */
interface Connection {
  /** Sends one command in bytes (bulk strings as Buffers), routed by `key` on a cluster. */
  bytes(key: Arg | undefined, args: Arg[]): Promise<unknown>;
  /** Sends one command with string replies, routed by `key` on a cluster. */
  strings(key: Arg | undefined, args: Arg[]): Promise<unknown>;
  /** Sends `commands` as one pipeline to the node of `key`, replies in bytes. */
  pipeline(key: Arg | undefined, commands: Arg[][]): Promise<unknown[]>;
  ping(): Promise<unknown>;
  subscriber(): RedisStoreSubscriber;
  scan(cursor: string, args: (string | number)[]): Promise<[string, string[]]>;
  nodes?(): ScanConnection[];
}

/** The ioredis shape of the store on top of `connection`. */
function storeClientOver(connection: Connection): NodeRedisStoreClient {
  const store: NodeRedisStoreClient & Record<string, unknown> = {
    defineCommand(name, { numberOfKeys, lua }) {
      const script: Script = { numberOfKeys, lua, sha: createHash('sha1').update(lua).digest('hex') };
      // A script's first key is its record: on a cluster it routes the call.
      store[name] = (...args: Arg[]) => evalSha((command) => connection.strings(args[0], command), script, args);
      store[`${name}Buffer`] = (...args: Arg[]) =>
        evalSha((command) => connection.bytes(args[0], command), script, args);
    },
    setBuffer(key, value, px, milliseconds, nx, get) {
      return connection.bytes(key, ['SET', key, value, px, milliseconds, nx, get]) as Promise<Buffer | null>;
    },
    duplicate: () => connection.subscriber(),
    ping: () => connection.ping(),
    pipeline: () => collectingPipeline((key, commands) => connection.pipeline(key, commands)),
    evalBuffer(script, numberOfKeys, ...args) {
      return connection.bytes(args[0], ['EVAL', script, String(numberOfKeys), ...args]) as Promise<Reply>;
    },
    scan: (cursor, ...args) => connection.scan(cursor, args),
  };
  const { nodes } = connection;
  if (nodes) store.nodes = () => nodes();
  return store;
}

function replyTimeoutOf(options: { commandOptions?: { timeout?: number } } | undefined): number {
  const timeout = options?.commandOptions?.timeout;
  return typeof timeout === 'number' && timeout > 0 ? timeout : DEFAULT_REPLY_TIMEOUT_MS;
}

function standaloneStoreClient(client: NodeRedisClient): NodeRedisStoreClient {
  const bytes = client.withTypeMapping(AS_BUFFERS);
  const strings = client.withTypeMapping(AS_STRINGS);
  const timeout = replyTimeoutOf(client.options);
  return storeClientOver({
    bytes: (_key, args) => within(bytes.sendCommand(args), timeout),
    strings: (_key, args) => within(strings.sendCommand(args), timeout),
    pipeline(_key, commands) {
      const batch = bytes.multi();
      for (const args of commands) batch.addCommand(args);
      return within(batch.execAsPipeline(), timeout);
    },
    ping: () => within(client.sendCommand(['PING']), timeout),
    subscriber: () => standaloneSubscriber(client.duplicate()),
    scan: async (cursor, args) =>
      scanReply(await within(strings.sendCommand(['SCAN', cursor, ...args.map(String)]), timeout)),
  });
}

function clusterStoreClient(cluster: NodeRedisCluster, keepAliveChannel: string): NodeRedisStoreClient {
  const bytes = cluster.withTypeMapping(AS_BUFFERS);
  const strings = cluster.withTypeMapping(AS_STRINGS);
  // A cluster keeps its options as `_options`; its `commandOptions` apply to every node.
  const timeout = replyTimeoutOf((cluster as { _options?: { commandOptions?: { timeout?: number } } })._options);

  /**
   * The pipeline goes to the master of its key's slot on that node's own connection, with the
   * node's type mapping set to Buffers: a cluster's `multi(key).execAsPipeline()` would route it
   * as well, but would read its replies with the node's mapping rather than the cluster view's,
   * and so return records as strings.
   */
  async function sendPipeline(key: Arg, commands: Arg[][]): Promise<unknown[]> {
    const shard = cluster.slots[keySlot(key)];
    if (!shard) throw new Error(`no master is known for the slot of ${String(key)}`);
    const batch = (await cluster.nodeClient(shard.master)).withTypeMapping(AS_BUFFERS).multi();
    for (const args of commands) batch.addCommand(args);
    return batch.execAsPipeline();
  }

  return storeClientOver({
    bytes: (key, args) => within(bytes.sendCommand(key, false, args), timeout),
    strings: (key, args) => within(strings.sendCommand(key, false, args), timeout),
    pipeline(key, commands) {
      if (key === undefined) return Promise.reject(new Error('a pipeline needs a key to route it'));
      return within(sendPipeline(key, commands), timeout);
    },
    ping: () => within(cluster.sendCommand(undefined, true, ['PING']), timeout),
    subscriber: () => clusterSubscriber(cluster.duplicate({ minimizeConnections: true }), keepAliveChannel),
    scan: () => Promise.reject(new Error('SCAN on a cluster goes to each master')),
    nodes: () =>
      cluster.masters.map((master) => ({
        async scan(cursor: string, ...args: (string | number)[]) {
          const node = await cluster.nodeClient(master);
          return scanReply(await within(node.sendCommand(['SCAN', cursor, ...args.map(String)]), timeout));
        },
      })),
  });
}

/** CRC16-XMODEM (polynomial 0x1021) by byte. */
const CRC16_TABLE = Uint16Array.from({ length: 256 }, (_, byte) => {
  let crc = byte << 8;
  for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  return crc;
});

/** The Cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key without one, mod 16384. */
export function keySlot(key: Arg): number {
  const bytes = typeof key === 'string' ? Buffer.from(key) : key;
  const open = bytes.indexOf(0x7b); // '{'
  const close = open === -1 ? -1 : bytes.indexOf(0x7d, open + 1); // '}'
  const hashed = close > open + 1 ? bytes.subarray(open + 1, close) : bytes;
  let crc = 0;
  for (const byte of hashed) crc = ((crc << 8) & 0xffff) ^ (CRC16_TABLE[((crc >> 8) ^ byte) & 0xff] as number);
  return crc % 16_384;
}

/** Fans node-redis's `(message, channel)` out to the store's ioredis-style `(channel, message)` listeners. */
function messageFanOut(): {
  listeners: ((channel: string, message: string) => void)[];
  onMessage: MessageListener;
} {
  const listeners: ((channel: string, message: string) => void)[] = [];
  return {
    listeners,
    onMessage(message, channel) {
      for (const listener of listeners) listener(String(channel), String(message));
    },
  };
}

function destroyQuietly(connection: { destroy(): unknown }): void {
  try {
    connection.destroy();
  } catch {
    // Already closed.
  }
}

/**
 * A standalone client's `duplicate()` as the store's subscriber. node-redis emits `ready` on
 * every (re)connection and subscribes its channels again by itself, as ioredis does.
 */
function standaloneSubscriber(connection: NodeRedisSubscriber): RedisStoreSubscriber {
  const { listeners, onMessage } = messageFanOut();
  let started = false;
  const subscriber: RedisStoreSubscriber = {
    get status() {
      if (connection.isReady) return 'ready';
      return started ? 'connecting' : 'wait';
    },
    async connect() {
      started = true;
      await connection.connect();
    },
    subscribe: (...channels) => connection.subscribe(channels, onMessage),
    unsubscribe: (...channels) => connection.unsubscribe(channels, onMessage),
    on(event: string, listener: (...args: never[]) => void) {
      if (event === 'message') listeners.push(listener as (channel: string, message: string) => void);
      else connection.on(event as 'ready' | 'error', listener as (...args: unknown[]) => void);
      return subscriber;
    },
    disconnect: () => destroyQuietly(connection),
  };
  return subscriber;
}

/** How long a cluster subscriber waits before it tries again to discover the cluster. */
const CLUSTER_RECONNECT_MS = 1_000;

/**
 * A cluster's `duplicate()` as the store's subscriber: node-redis subscribes on one node of its
 * own choice, and moves the subscriptions to another when that node leaves the cluster. It
 * closes that connection when the last channel is unsubscribed, so the subscriber keeps one
 * channel subscribed for its whole life. It is `ready` once it discovered the cluster and its
 * pub/sub connection is up, and emits `ready` again whenever that connection comes back (the
 * same node reconnected, or another took over): messages published meanwhile were lost.
 */
function clusterSubscriber(cluster: NodeRedisClusterSubscriber, keepAliveChannel: string): RedisStoreSubscriber {
  const { listeners, onMessage } = messageFanOut();
  const readyListeners: (() => void)[] = [];
  let state: 'wait' | 'connecting' | 'up' | 'closed' = 'wait';
  let retry: NodeJS.Timeout | undefined;

  function emitReady(): void {
    for (const listener of readyListeners) listener();
  }

  cluster.on('node-ready', () => {
    if (state === 'up' && cluster.pubSubNode?.client.isReady) emitReady();
  });

  async function start(): Promise<void> {
    try {
      if (!cluster.isReady) await cluster.connect();
      await cluster.subscribe([keepAliveChannel], onMessage);
    } catch (error) {
      // The cluster could not be discovered: waiters poll, and discovery is tried again.
      if (state === 'connecting') {
        retry = setTimeout(() => void start().catch(() => {}), CLUSTER_RECONNECT_MS);
        retry.unref();
      }
      throw error;
    }
    if (state !== 'connecting') return;
    state = 'up';
    emitReady();
  }

  const subscriber: RedisStoreSubscriber = {
    get status() {
      if (state === 'up') return cluster.pubSubNode?.client.isReady ? 'ready' : 'connecting';
      return state === 'closed' ? 'end' : state;
    },
    connect() {
      state = 'connecting';
      return start();
    },
    subscribe: (...channels) => cluster.subscribe(channels, onMessage),
    unsubscribe: (...channels) => cluster.unsubscribe(channels, onMessage),
    on(event: string, listener: (...args: never[]) => void) {
      if (event === 'message') listeners.push(listener as (channel: string, message: string) => void);
      else if (event === 'ready') readyListeners.push(listener as () => void);
      else cluster.on(event as 'error', listener as (...args: unknown[]) => void);
      return subscriber;
    },
    disconnect() {
      state = 'closed';
      clearTimeout(retry);
      destroyQuietly(cluster);
    },
  };
  return subscriber;
}
