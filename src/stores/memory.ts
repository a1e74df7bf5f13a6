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
import { chunkAllocator } from './memory-chunks.js';
import {
  completedRecord,
  createdAtOf,
  expiresAtOf,
  fingerprintOf,
  inFlightRecord,
  leaseUntilOf,
  responseOf,
  setExpiresAt,
  setLeaseUntil,
  setState,
  setToken,
  stateOf,
  tokenOf,
} from './memory-records.js';
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

const NO_STEPS: Readonly<Record<string, string>> = Object.freeze({});

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
  // Each record is one buffer (see memory-records.ts); the steps of the few records that save
  // any live beside them.
  const records = new Map<string, Buffer>();
  const stepsOf = new Map<string, Record<string, string>>();
  // Open records live apart from completed ones: most complete within milliseconds, and their
  // chunks are then freed, instead of each sitting beside completed records for a ttl.
  const allocateOpen = chunkAllocator();
  const allocateDone = chunkAllocator();
  const waiters = new Map<string, Set<() => void>>();

  const isLive = (record: Buffer, now: number) => stateOf(record) === 'in_flight' && leaseUntilOf(record) > now;
  const isExpired = (record: Buffer, now: number) => expiresAtOf(record) <= now && !isLive(record, now);

  /** Drops the steps saved under `key`, if any. */
  function dropSteps(key: string): void {
    // Few records save steps; the guard spares the common case a second hash lookup.
    if (stepsOf.size > 0) stepsOf.delete(key);
  }

  function forget(key: string): void {
    records.delete(key);
    dropSteps(key);
  }

  function sweep(): void {
    const now = Date.now();
    for (const [key, record] of records) if (isExpired(record, now)) forget(key);
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
        forget(key);
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
  function owned(key: string, token: number): Buffer | undefined {
    const record = records.get(key);
    if (record === undefined || stateOf(record) !== 'in_flight' || tokenOf(record) !== token) return undefined;
    return isExpired(record, Date.now()) ? undefined : record;
  }

  function claim({ key, fingerprint, leaseMs, ttlMs }: ClaimInput): ClaimResult {
    const now = Date.now();
    let record = records.get(key);
    let floor = 0;
    if (record && isExpired(record, now)) {
      floor = tokenOf(record) + 1;
      forget(key);
      record = undefined;
    }
    if (!record) {
      const leaseUntil = now + leaseMs;
      const token = Math.max(now, floor);
      records.set(
        key,
        inFlightRecord(allocateOpen, fingerprint, token, now, leaseUntil, Math.max(now + ttlMs, leaseUntil)),
      );
      evictIfFull(now);
      return { status: 'acquired', token, steps: NO_STEPS, recovered: false };
    }
    if (fingerprintOf(record) !== fingerprint) return { status: 'mismatch' };
    if (stateOf(record) === 'completed') return { status: 'replay', response: responseOf(record) };
    if (isLive(record, now)) return { status: 'in_flight', retryAfterMs: leaseUntilOf(record) - now };
    const recovered = stateOf(record) === 'in_flight';
    const token = tokenOf(record) + 1;
    const leaseUntil = now + leaseMs;
    setState(record, 'in_flight');
    setToken(record, token);
    setLeaseUntil(record, leaseUntil);
    setExpiresAt(record, Math.max(expiresAtOf(record), leaseUntil));
    return { status: 'acquired', token, steps: { ...stepsOf.get(key) }, recovered };
  }

  function complete(key: string, token: number, response: StoredResponse, ttlMs: number): FencedResult {
    const record = owned(key, token);
    if (!record) return 'stale';
    dropSteps(key);
    const done = completedRecord(allocateDone, record, response);
    setExpiresAt(done, Date.now() + ttlMs);
    records.set(key, done);
    notify(key);
    return 'ok';
  }

  function infoOf(key: string, record: Buffer): RecordInfo {
    const state = stateOf(record);
    return {
      key,
      state,
      token: tokenOf(record),
      createdAt: createdAtOf(record),
      ...(state === 'in_flight' ? { leaseUntil: leaseUntilOf(record) } : {}),
      expiresAt: expiresAtOf(record),
      steps: Object.keys(stepsOf.get(key) ?? {}),
      ...(state === 'completed' ? { response: responseOf(record) } : {}),
    };
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
      setState(record, 'released');
      setExpiresAt(record, Date.now() + ttlMs);
      notify(key);
      return 'ok';
    },

    async renew(key: string, token: number, leaseMs: number): Promise<FencedResult> {
      const record = owned(key, token);
      if (!record) return 'stale';
      const leaseUntil = Date.now() + leaseMs;
      setLeaseUntil(record, leaseUntil);
      setExpiresAt(record, Math.max(expiresAtOf(record), leaseUntil));
      return 'ok';
    },

    async saveStep(key: string, token: number, name: string, value: string): Promise<FencedResult> {
      const record = owned(key, token);
      if (!record) return 'stale';
      let steps = stepsOf.get(key);
      if (steps === undefined) {
        steps = {};
        stepsOf.set(key, steps);
      }
      steps[name] = value;
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
        const record = records.get(key) as Buffer;
        if (isExpired(record, now) || (query.state !== undefined && stateOf(record) !== query.state)) continue;
        if (createdAtOf(record) > bornBefore) continue;
        if (page.length === limit) return { records: page, cursor: page[page.length - 1]?.key as string };
        page.push(infoOf(key, record));
      }
      return { records: page };
    },

    async delete(key: string, options: { force?: boolean } = {}): Promise<DeleteResult> {
      const record = records.get(key);
      if (record === undefined || isExpired(record, Date.now())) return 'absent';
      if (isLive(record, Date.now()) && options.force !== true) return 'in_flight';
      forget(key);
      notify(key);
      await outlastToken(tokenOf(record));
      return 'deleted';
    },

    async rewriteResponse(key: string, expectedBody: Uint8Array, response: StoredResponse): Promise<RewriteResult> {
      const record = records.get(key);
      if (record === undefined || stateOf(record) !== 'completed' || isExpired(record, Date.now())) return 'changed';
      if (!asBuffer(responseOf(record).body).equals(expectedBody)) return 'changed';
      records.set(key, completedRecord(allocateDone, record, response));
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
