/**
 * The Redis store's operations side (`inspect`, `list`, `delete`, `rewriteResponse`): reads, deletes
 * and rewrites a record in one script each, so what is reported, or deleted, is one consistent state of the record; and
 * lists with `SCAN` over the store's prefix on every master.
 *
 * @module
 */
import {
  type DeleteResult,
  IdempotencyStoreUnavailableError,
  type RecordInfo,
  type RecordPage,
  type RecordQuery,
  type RewriteResult,
  type StoredResponse,
} from '../vocabulary/index.js';
import { asBuffer } from './bytes.js';
import { outlastToken, pageLimit } from './operations.js';
import { completedResponse, type Reply, responseHead, text } from './redis-record.js';
import { PRELUDE } from './redis-scripts.js';

/**
 * Reads a record as operations see it. KEYS: record, steps. Replies `{}` when absent, else
 * `{record, pttl, step names…}` (step names only while the record's flags say they are its own).
 */
const INSPECT_SCRIPT = `${PRELUDE}
local rec = redis.call('GET', KEYS[1])
if not rec then return {} end
local reply = {rec, tostring(redis.call('PTTL', KEYS[1]))}
if string.sub(rec, 1, 1) ~= 'C' then
  local _, _, flags = open_fields(rec)
  if has(flags, 's') then
    for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do reply[#reply + 1] = name end
  end
end
return reply
`;

/**
 * Deletes a record unless it is a live in-flight one and ARGV[1] is not '1'. KEYS: record,
 * steps. Replies `{'absent'}`, `{'in_flight'}` or `{'deleted', token}` (token '' for a completed
 * record, which keeps none). The read and the delete are one step: nothing claims in between.
 */
const DELETE_SCRIPT = `${PRELUDE}
local rec = redis.call('GET', KEYS[1])
if not rec then return {'absent'} end
local token = ''
if string.sub(rec, 1, 1) ~= 'C' then
  local ttl
  token, ttl = open_fields(rec)
  if string.sub(rec, 1, 1) == 'I' and redis.call('PTTL', KEYS[1]) - tonumber(ttl) > 0 and ARGV[1] ~= '1' then
    return {'in_flight'}
  end
end
redis.call('DEL', KEYS[1], KEYS[2])
return {'deleted', token}
`;

/**
 * Replaces the response of a completed record whose body is ARGV[1] with ARGV[2] (`<status>|<header
 * bytes>|<headers><body>`), keeping its fingerprint and TTL. KEYS: record, steps. Replies 'ok' or
 * 'changed'. The comparison and the write are one step: nothing completes or deletes in between.
 */
const REWRITE_SCRIPT = `
local rec = redis.call('GET', KEYS[1])
if not rec or string.sub(rec, 1, 1) ~= 'C' then return 'changed' end
local a = string.find(rec, '|', 3, true)
local fpEnd = a + tonumber(string.sub(rec, 3, a - 1))
local s = string.find(rec, '|', fpEnd + 1, true)
local l = string.find(rec, '|', s + 1, true)
local bodyStart = l + 1 + tonumber(string.sub(rec, s + 1, l - 1))
if string.sub(rec, bodyStart) ~= ARGV[1] then return 'changed' end
redis.call('SET', KEYS[1], string.sub(rec, 1, fpEnd) .. ARGV[2], 'KEEPTTL')
return 'ok'
`;

/** The ioredis calls operations make, on the client or (for `SCAN`) on each master of a Cluster. */
interface OperationsConnection {
  evalBuffer?(script: string, keys: number, ...args: (string | Buffer)[]): Promise<Reply>;
  scan?(cursor: string, ...args: (string | number)[]): Promise<[string, string[]]>;
  nodes?(role: 'master'): OperationsConnection[];
}

/** How the store names a record's keys, and recovers the store key from a record key. */
export interface RedisOperationsOptions {
  client: object;
  prefix: string;
  keysOf(key: string): { record: string; steps: string };
}

/** The store's `inspect`, `list`, `delete` and `rewriteResponse`. */
export interface RedisOperations {
  inspect(key: string): Promise<RecordInfo | undefined>;
  list(query?: RecordQuery): Promise<RecordPage>;
  delete(key: string, options?: { force?: boolean }): Promise<DeleteResult>;
  rewriteResponse(key: string, expectedBody: Uint8Array, response: StoredResponse): Promise<RewriteResult>;
}

/** A token of the Redis store is the creating app server's clock in ms times 1024, plus 10 random bits. */
const TOKEN_MS = 1024;

export function createRedisOperations({ client, prefix, keysOf }: RedisOperationsOptions): RedisOperations {
  const connection = client as OperationsConnection;

  function evaluate(script: string, key: string, ...extra: (string | Buffer)[]): Promise<Reply> {
    if (typeof connection.evalBuffer !== 'function') {
      return Promise.reject(
        new IdempotencyStoreUnavailableError('Redis operations need an ioredis client (evalBuffer)'),
      );
    }
    const { record, steps } = keysOf(key);
    const args = [record, steps, ...extra];
    return connection.evalBuffer(script, 2, ...args).catch((error: unknown) => {
      throw new IdempotencyStoreUnavailableError(`Redis operation on ${record} failed: ${String(error)}`, {
        cause: error,
      });
    });
  }

  async function inspect(key: string): Promise<RecordInfo | undefined> {
    const reply = await evaluate(INSPECT_SCRIPT, key);
    if (!Array.isArray(reply) || reply.length < 2) return undefined;
    return infoOf(
      key,
      reply[0] as Buffer,
      Number(text(reply[1])),
      reply.slice(2).map((name) => text(name)),
    );
  }

  /** The masters to scan: every one of a Cluster, or the one server. */
  function masters(): OperationsConnection[] {
    return typeof connection.nodes === 'function' ? connection.nodes('master') : [connection];
  }

  /**
   * One page. The cursor is `<master>:<SCAN cursor>:<skip>`: the page went on from that SCAN
   * cursor and listed `skip` of its batch already, so a batch larger than the page is not lost.
   */
  async function list(query: RecordQuery = {}): Promise<RecordPage> {
    const limit = pageLimit(query.limit);
    const nodes = masters();
    let [node, scanCursor, skip] = parseCursor(query.cursor);
    const records: RecordInfo[] = [];
    const pattern = `${escapeGlob(prefix)}{*}`;
    while (node < nodes.length) {
      const master = nodes[node] as OperationsConnection;
      if (typeof master.scan !== 'function')
        throw new IdempotencyStoreUnavailableError('Redis operations need an ioredis client (scan)');
      const [next, keys] = await master.scan(scanCursor, 'MATCH', pattern, 'COUNT', Math.max(limit, 100));
      const batch = keys.filter((name) => name.endsWith('}')).slice(skip);
      let used = 0;
      for (const name of batch) {
        if (records.length === limit) return { records, cursor: `${node}:${scanCursor}:${skip + used}` };
        used++;
        const info = await inspect(name.slice(prefix.length + 1, -1));
        if (info !== undefined && matches(info, query)) records.push(info);
      }
      skip = 0;
      scanCursor = next;
      if (next === '0') {
        node++;
      }
      if (records.length === limit && node < nodes.length) return { records, cursor: `${node}:${scanCursor}:0` };
    }
    return { records };
  }

  async function remove(key: string, options: { force?: boolean } = {}): Promise<DeleteResult> {
    const reply = await evaluate(DELETE_SCRIPT, key, options.force === true ? '1' : '0');
    if (!Array.isArray(reply))
      throw new IdempotencyStoreUnavailableError(`Unexpected delete reply from Redis: ${String(reply)}`);
    const outcome = text(reply[0]);
    if (outcome !== 'deleted') return outcome as DeleteResult;
    const token = text(reply[1]);
    if (token !== '') await outlastToken(Number(token), () => Date.now() * TOKEN_MS);
    return 'deleted';
  }

  async function rewriteResponse(
    key: string,
    expectedBody: Uint8Array,
    response: StoredResponse,
  ): Promise<RewriteResult> {
    const value = Buffer.concat([Buffer.from(responseHead(response), 'utf8'), asBuffer(response.body)]);
    const outcome = text(await evaluate(REWRITE_SCRIPT, key, asBuffer(expectedBody), value));
    if (outcome !== 'ok' && outcome !== 'changed')
      throw new IdempotencyStoreUnavailableError(`Unexpected rewrite reply from Redis: ${outcome}`);
    return outcome;
  }

  return { inspect, list, delete: remove, rewriteResponse };
}

function parseCursor(cursor: string | undefined): [number, string, number] {
  if (cursor === undefined) return [0, '0', 0];
  const match = /^(\d+):(\d+):(\d+)$/.exec(cursor);
  if (!match) throw new IdempotencyStoreUnavailableError(`Not a cursor of the Redis store: ${cursor}`);
  return [Number(match[1]), match[2] as string, Number(match[3])];
}

/** The prefix as a literal in a `SCAN MATCH` pattern. */
function escapeGlob(text: string): string {
  return text.replace(/[*?[\]\\]/g, '\\$&');
}

function matches(info: RecordInfo, query: RecordQuery): boolean {
  if (query.state !== undefined && info.state !== query.state) return false;
  if (query.olderThanMs === undefined) return true;
  return info.createdAt !== undefined && info.createdAt <= Date.now() - query.olderThanMs;
}

/** A record read by INSPECT_SCRIPT, with its remaining time to live in ms. */
function infoOf(key: string, value: Buffer, pttl: number, steps: string[]): RecordInfo {
  const now = Date.now();
  const expiresAt = now + Math.max(0, pttl);
  if (value[0] === 0x43) return { key, state: 'completed', expiresAt, steps: [], response: completedResponse(value) };
  const [state, token, ttl] = value.toString('latin1').split('|', 3);
  const tokenNumber = Number(token);
  return {
    key,
    state: state === 'I' ? 'in_flight' : 'released',
    token: tokenNumber,
    createdAt: Math.floor(tokenNumber / TOKEN_MS),
    // An in-flight record expires lease + ttl after its claim or renewal, so the lease ends ttl before it.
    ...(state === 'I' ? { leaseUntil: expiresAt - Number(ttl) } : {}),
    expiresAt,
    steps,
  };
}
