/**
 * The in-process store: for tests, development and single-instance services that can lose their
 * keys on restart. Every operation runs synchronously inside one call, so each is atomic within
 * the process; it is not shared between processes (use SQLite, Redis or PostgreSQL for that).
 *
 * @module
 */
import {
  type ClaimInput,
  type ClaimResult,
  type DeleteResult,
  type Duration,
  type FencedResult,
  IdempotencyConfigInvalidError,
  type IdempotencyStore,
  parseDuration,
  type RecordInfo,
  type RecordPage,
  type RecordQuery,
  type RewriteResult,
  type StoredResponse,
  type SyncStoreOperations,
} from '../vocabulary/index.js';
import { asBuffer } from './bytes.js';
import { bodyKeeper } from './memory-bodies.js';
import { outlastToken, pageLimit } from './operations.js';
import { startSweeper } from './sweeper.js';

/** Options of {@link createMemoryStore}. */
export interface MemoryStoreOptions {
  /**
   * Most records kept. Past it the oldest records that are not live in-flight are evicted, a
   * 64th of the bound at a time; live in-flight records are never evicted, so the bound may be
   * exceeded while they all run.
   * @default 100000
   */
  maxEntries?: number;
  /**
   * How often expired records are swept out (they are also treated as absent when read).
   * `false` turns the timer off.
   * @default '30s'
   */
  sweepInterval?: Duration | false;
}

/** A memory store; `size` is the number of records it holds now. */
export interface MemoryStore extends IdempotencyStore {
  /** Number of records currently held (expired ones included until swept or read). */
  readonly size: number;
  /** Stops the sweep timer and wakes every waiter. */
  close(): Promise<void>;
}

interface MemoryRecord {
  fingerprint: string;
  state: 'in_flight' | 'completed' | 'released';
  token: number;
  /** When this lifetime of the record began. */
  createdAt: number;
  leaseUntil: number;
  expiresAt: number;
  /** Saved steps; `undefined` until the first one, so most records never allocate it. */
  steps: Record<string, string> | undefined;
  response: StoredResponse | undefined;
}

function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && asBuffer(a).equals(b);
}

const NO_STEPS: Readonly<Record<string, string>> = Object.freeze({});

function infoOf(key: string, record: MemoryRecord): RecordInfo {
  return {
    key,
    state: record.state,
    token: record.token,
    createdAt: record.createdAt,
    ...(record.state === 'in_flight' ? { leaseUntil: record.leaseUntil } : {}),
    expiresAt: record.expiresAt,
    steps: Object.keys(record.steps ?? {}),
    ...(record.response === undefined ? {} : { response: record.response }),
  };
}

/**
 * Creates an in-process store with a size bound and expiry.
 *
 * @example
 * ```ts
 * import { createMemoryStore } from 'idempo/memory';
 * const idem = createIdempotency({ store: createMemoryStore({ maxEntries: 50_000 }) });
 * ```
 */
export function createMemoryStore(options: MemoryStoreOptions = {}): MemoryStore {
  const { maxEntries = 100_000 } = options;
  if (!Number.isSafeInteger(maxEntries) || maxEntries <= 0) {
    throw new IdempotencyConfigInvalidError(`maxEntries: expected a positive integer, got ${maxEntries}`);
  }
  const { sweepInterval = '30s' } = options;
  const sweepMs = sweepInterval === false ? undefined : parseDuration(sweepInterval, 'sweepInterval');
  const records = new Map<string, MemoryRecord>();
  const keepBody = bodyKeeper();
  /** The response as the store keeps it: its own copy of the body (see memory-bodies.ts). */
  const kept = (response: StoredResponse): StoredResponse => ({
    status: response.status,
    headers: response.headers,
    body: keepBody(response.body),
  });
  const waiters = new Map<string, Set<() => void>>();

  const isLive = (record: MemoryRecord, now: number) => record.state === 'in_flight' && record.leaseUntil > now;
  const isExpired = (record: MemoryRecord, now: number) => record.expiresAt <= now && !isLive(record, now);

  function sweep(): void {
    const now = Date.now();
    for (const [key, record] of records) if (isExpired(record, now)) records.delete(key);
  }
  const sweeper = startSweeper(sweepMs, sweep, () => {});

  // Evicting one record per claim would restart the scan at the Map's front every time and step
  // over every entry deleted since V8 last compacted the table, a cost that grows with the store.
  // A full store evicts a batch (1/64 of the bound) at once instead.
  const evictTo = maxEntries - Math.floor(maxEntries / 64);

  function evictIfFull(now: number): void {
    if (records.size <= maxEntries) return;
    // Map order is insertion order, so the first entries are the oldest.
    for (const [key, record] of records) {
      if (!isLive(record, now)) {
        records.delete(key);
        if (records.size <= evictTo) return;
      }
    }
  }

  function notify(key: string): void {
    const set = waiters.get(key);
    if (!set) return;
    waiters.delete(key);
    for (const wake of set) wake();
  }

  /** The record if it is current and owned by `token`; expired and foreign records count as absent. */
  function owned(key: string, token: number): MemoryRecord | undefined {
    const record = records.get(key);
    if (record?.state !== 'in_flight' || record.token !== token) return undefined;
    return isExpired(record, Date.now()) ? undefined : record;
  }

  function claim({ key, fingerprint, leaseMs, ttlMs }: ClaimInput): ClaimResult {
    const now = Date.now();
    let record = records.get(key);
    let floor = 0;
    if (record && isExpired(record, now)) {
      floor = record.token + 1;
      records.delete(key);
      record = undefined;
    }
    if (!record) {
      const leaseUntil = now + leaseMs;
      records.set(key, {
        fingerprint,
        state: 'in_flight',
        token: Math.max(now, floor),
        createdAt: now,
        leaseUntil,
        expiresAt: Math.max(now + ttlMs, leaseUntil),
        steps: undefined,
        response: undefined,
      });
      evictIfFull(now);
      return { status: 'acquired', token: Math.max(now, floor), steps: NO_STEPS, recovered: false };
    }
    if (record.fingerprint !== fingerprint) return { status: 'mismatch' };
    if (record.state === 'completed') return { status: 'replay', response: record.response as StoredResponse };
    if (isLive(record, now)) return { status: 'in_flight', retryAfterMs: record.leaseUntil - now };
    const recovered = record.state === 'in_flight';
    record.state = 'in_flight';
    record.token += 1;
    record.leaseUntil = now + leaseMs;
    record.expiresAt = Math.max(record.expiresAt, record.leaseUntil);
    return { status: 'acquired', token: record.token, steps: { ...record.steps }, recovered };
  }

  function complete(key: string, token: number, response: StoredResponse, ttlMs: number): FencedResult {
    const record = owned(key, token);
    if (!record) return 'stale';
    record.state = 'completed';
    record.response = kept(response);
    record.steps = undefined;
    record.expiresAt = Date.now() + ttlMs;
    notify(key);
    return 'ok';
  }

  const store: MemoryStore = {
    get size() {
      return records.size;
    },

    claim: async (input: ClaimInput): Promise<ClaimResult> => claim(input),

    complete: async (key: string, token: number, response: StoredResponse, ttlMs: number): Promise<FencedResult> =>
      complete(key, token, response, ttlMs),

    async release(key: string, token: number, ttlMs: number): Promise<FencedResult> {
      const record = owned(key, token);
      if (!record) return 'stale';
      record.state = 'released';
      record.expiresAt = Date.now() + ttlMs;
      notify(key);
      return 'ok';
    },

    async renew(key: string, token: number, leaseMs: number): Promise<FencedResult> {
      const record = owned(key, token);
      if (!record) return 'stale';
      record.leaseUntil = Date.now() + leaseMs;
      record.expiresAt = Math.max(record.expiresAt, record.leaseUntil);
      return 'ok';
    },

    async saveStep(key: string, token: number, name: string, value: string): Promise<FencedResult> {
      const record = owned(key, token);
      if (!record) return 'stale';
      record.steps ??= {};
      record.steps[name] = value;
      return 'ok';
    },

    async inspect(key: string): Promise<RecordInfo | undefined> {
      const record = records.get(key);
      return record === undefined || isExpired(record, Date.now()) ? undefined : infoOf(key, record);
    },

    async list(query: RecordQuery = {}): Promise<RecordPage> {
      const now = Date.now();
      const limit = pageLimit(query.limit);
      const bornBefore = now - (query.olderThanMs ?? 0);
      // Key order makes the cursor (the last key listed) stable while records come and go.
      const keys = [...records.keys()].filter((key) => query.cursor === undefined || key > query.cursor).sort();
      const page: RecordInfo[] = [];
      for (const key of keys) {
        const record = records.get(key) as MemoryRecord;
        if (isExpired(record, now) || (query.state !== undefined && record.state !== query.state)) continue;
        if (record.createdAt > bornBefore) continue;
        if (page.length === limit) return { records: page, cursor: page[page.length - 1]?.key as string };
        page.push(infoOf(key, record));
      }
      return { records: page };
    },

    async delete(key: string, options: { force?: boolean } = {}): Promise<DeleteResult> {
      const record = records.get(key);
      if (record === undefined || isExpired(record, Date.now())) return 'absent';
      if (isLive(record, Date.now()) && options.force !== true) return 'in_flight';
      records.delete(key);
      notify(key);
      await outlastToken(record.token);
      return 'deleted';
    },

    async rewriteResponse(key: string, expectedBody: Uint8Array, response: StoredResponse): Promise<RewriteResult> {
      const record = records.get(key);
      if (record?.state !== 'completed' || isExpired(record, Date.now())) return 'changed';
      if (!sameBytes(record.response?.body, expectedBody)) return 'changed';
      record.response = kept(response);
      return 'ok';
    },

    waitForChange(key: string, timeoutMs: number): Promise<void> {
      return new Promise((resolve) => {
        const set = waiters.get(key) ?? new Set<() => void>();
        waiters.set(key, set);
        const wake = () => {
          clearTimeout(timer);
          if (set.delete(wake) && set.size === 0 && waiters.get(key) === set) waiters.delete(key);
          resolve();
        };
        const timer = setTimeout(wake, timeoutMs);
        set.add(wake);
      });
    },

    async close(): Promise<void> {
      await sweeper.stop();
      for (const key of [...waiters.keys()]) notify(key);
    },
  };
  // Nothing here waits on I/O, so the engine may claim and complete without a promise turn.
  // Not enumerable: a wrapper made with `{ ...store }` stays a plain asynchronous store.
  const sync: SyncStoreOperations = { store, claim, complete };
  Object.defineProperty(store, 'sync', { value: sync, enumerable: false });
  return store;
}
