/**
 * The PostgreSQL store: one row per scoped key in a table created by an explicit migration,
 * every transition a single statement, time from the database clock so every app server agrees,
 * and `LISTEN`/`NOTIFY` to wake waiting duplicates.
 *
 * How a claim moves a row (the contract's state machine, as the `CLAIM` statement decides it):
 *
 * ```
 *  no row ───────────────────────────── INSERT ─────────────────────────────▶ in_flight (acquired, token = now ms)
 *  expired row (any state but a live in_flight) ─ restart ──────────────────▶ in_flight (acquired, token = max(now ms, token+1), steps cleared)
 *  other fingerprint ────────────────── keep ───────────────────────────────▶ unchanged (mismatch)
 *  released ─────────────────────────── reclaim ────────────────────────────▶ in_flight (acquired, token+1, steps kept)
 *  in_flight, lease passed ──────────── recover ────────────────────────────▶ in_flight (acquired, token+1, steps kept, recovered)
 *  in_flight, lease live ────────────── keep ───────────────────────────────▶ unchanged (in_flight, retry after the lease)
 *  completed ────────────────────────── keep ───────────────────────────────▶ unchanged (replay)
 * ```
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
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
  type TransactionStep,
  type TransactionWork,
} from '../vocabulary/index.js';
import { asBuffer } from './bytes.js';
import {
  type PostgresPool,
  type PostgresQueryable,
  type PostgresQueryResult,
  quoteIdentifier,
  translateError,
} from './postgres-client.js';
import { groupCommit } from './postgres-group-commit.js';
import { createChangeListener } from './postgres-listen.js';
import {
  DEFAULT_MIGRATIONS_TABLE,
  DEFAULT_TABLE,
  migratePostgres,
  type PostgresMigrateOptions,
  type PostgresMigrationResult,
} from './postgres-migrate.js';
import { createPostgresOperations } from './postgres-operations.js';
import { json, parseToken, toBytes } from './postgres-rows.js';
import {
  claimSql,
  completeSql,
  heldSql,
  releaseSql,
  renewSql,
  SYNCHRONOUS_COMMIT_LEVELS,
  type SynchronousCommit,
  saveStepSql,
  statementName,
  sweepSql,
} from './postgres-sql.js';
import { createPostgresTransaction } from './postgres-transaction.js';

export type { SynchronousCommit } from './postgres-sql.js';

import { startSweeper } from './sweeper.js';

export { IdempotencyStoreNotMigratedError } from '../vocabulary/index.js';
export type {
  PostgresNotification,
  PostgresPool,
  PostgresPoolClient,
  PostgresQueryable,
  PostgresQueryResult,
} from './postgres-client.js';
export {
  migratePostgres,
  POSTGRES_SCHEMA_VERSION,
  type PostgresMigrateOptions,
  type PostgresMigrationResult,
} from './postgres-migrate.js';

/** Options of {@link createPostgresStore}. */
export interface PostgresStoreOptions extends PostgresMigrateOptions {
  /**
   * Your `pg` Pool (or anything with its `query()` and `connect()`). The store never ends it;
   * it checks out one client for `LISTEN` on the first wait and gives it back in `close()`.
   */
  pool: PostgresPool;
  /**
   * Create or upgrade the table on first use instead of failing with
   * `IDEMPO_STORE_NOT_MIGRATED`. Runs DDL from the request path, so it is off unless you ask:
   * prefer `idempo migrate --store postgres://…` or `store.migrate()` at deploy time.
   * @default false
   */
  autoMigrate?: boolean;
  /**
   * Send the store's statements as named (prepared) statements, so PostgreSQL parses and plans
   * each once per connection instead of on every request; in the benchmark, parsing and planning
   * were most of the database's CPU. Turn it off behind a pooler that cannot keep prepared
   * statements (PgBouncer in transaction mode before 1.21, or without `max_prepared_statements`).
   * @default true
   */
  preparedStatements?: boolean;
  /**
   * The `LISTEN`/`NOTIFY` channel on which `complete` and `release` announce a key.
   * @default 'idempo_changes'
   */
  channel?: string;
  /**
   * How often expired rows are deleted, in batches (expiry is also checked on every read, so the
   * sweep only reclaims space). `false` turns the timer off: call `store.sweep()` yourself.
   * @default '1m'
   */
  sweepInterval?: Duration | false;
  /**
   * Rows deleted per sweep statement; a sweep runs batches until one comes back short (at most
   * 100 per run), so no statement holds many row locks or runs long.
   * @default 1000
   */
  sweepBatchSize?: number;
  /**
   * How often a waiting duplicate re-reads its key when `LISTEN` is unavailable (the listening
   * connection could not be opened or was lost).
   * @default '1s'
   */
  pollInterval?: Duration;
  /**
   * Called with failures no request sees: a failed sweep, a lost `LISTEN` connection. Requests
   * still get their own errors (and the engine its `503`). Must not throw.
   * @default ignores them
   */
  onBackgroundError?: (error: unknown) => void;
  /**
   * The `synchronous_commit` of idempo's own writes (claim, complete, release, renew, saveStep),
   * set inside each statement with `set_config(…, true)`, so it lasts for that statement's commit
   * only and never leaks into your other queries on the pool. With a synchronous standby
   * (`synchronous_standby_names`), `'remote_apply'` or `'on'` make a claim or a completion return
   * only once the standby has it, so promoting that standby loses no key that ran; `'local'` and
   * `'off'` do not wait for it. Without `synchronous_standby_names`, every level but `'off'` is
   * the same as `'local'`. See docs/stores/postgres.md for what each deployment guarantees.
   * @default undefined (the server's or the role's own setting)
   */
  synchronousCommit?: SynchronousCommit;
}

/**
 * The PostgreSQL store: the {@link IdempotencyStore} contract plus its migration and sweep.
 *
 * @example
 * ```ts
 * const store = createPostgresStore({ pool });
 * await store.migrate();       // once per deploy; idempotent
 * const deleted = await store.sweep(); // or let the timer do it
 * await store.close();         // stops the timer, frees the LISTEN connection; the pool stays open
 * ```
 */
export interface PostgresStore extends IdempotencyStore {
  /** Creates or upgrades the table ({@link migratePostgres} with this store's names). */
  migrate(): Promise<PostgresMigrationResult>;
  /** Deletes expired rows in bounded batches now; resolves to how many it deleted. */
  sweep(): Promise<number>;
  /** Resolves when `complete` or `release` announces `key`, or after `timeoutMs`. */
  waitForChange(key: string, timeoutMs: number): Promise<void>;
  /** Stops the sweep timer and releases the `LISTEN` client. Never ends the pool. */
  close(): Promise<void>;
  /** Runs `SELECT 1` on the pool; rejects when PostgreSQL cannot be reached. */
  ping(): Promise<void>;
  /**
   * Runs `work` on a client of the pool inside a transaction that also saves the step, fenced:
   * what `ctx.transaction()` calls (see {@link IdempotencyStore.transaction} and docs/transactions.md).
   */
  transaction(step: TransactionStep | undefined, work: TransactionWork): Promise<FencedResult>;
}

/** Most sweep batches in one run, so one run is bounded even after a long outage. */
const SWEEP_MAX_BATCHES = 100;

/** Most claims (or completions) in one statement. */
const GROUP_COMMIT_MAX = 256;
/**
 * Claim (and completion) statements in flight at once. Two keep a commit's WAL flush and the next
 * batch's round trip overlapping, and leave the rest of a shared pool to the application.
 */
const GROUP_COMMIT_IN_FLIGHT = 2;

/**
 * Creates the PostgreSQL store on your `pg` Pool. The table comes from an explicit migration:
 * run `store.migrate()` (or `idempo migrate --store postgres://…`) once per database, or pass
 * `autoMigrate: true`. Until then every call fails with `IDEMPO_STORE_NOT_MIGRATED`.
 *
 * @example
 * ```ts
 * import pg from 'pg';
 * import { createIdempotency } from 'idempo';
 * import { createPostgresStore } from 'idempo/postgres';
 *
 * const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, connectionTimeoutMillis: 2_000 });
 * pool.on('error', () => {}); // idle connections lost during a restart must not crash the app
 * const store = createPostgresStore({ pool });
 * await store.migrate();
 * const idem = createIdempotency({ store });
 * ```
 */
export function createPostgresStore(options: PostgresStoreOptions): PostgresStore {
  const {
    pool,
    table: tableName = DEFAULT_TABLE,
    migrationsTable = DEFAULT_MIGRATIONS_TABLE,
    autoMigrate = false,
    preparedStatements = true,
    channel = 'idempo_changes',
    sweepInterval = '1m',
    sweepBatchSize = 1000,
    pollInterval = '1s',
    onBackgroundError,
    synchronousCommit,
  } = options ?? ({} as PostgresStoreOptions);
  if (synchronousCommit !== undefined && !SYNCHRONOUS_COMMIT_LEVELS.includes(synchronousCommit)) {
    throw new IdempotencyConfigInvalidError(
      `synchronousCommit: expected one of ${SYNCHRONOUS_COMMIT_LEVELS.join(', ')}, got ${JSON.stringify(synchronousCommit)}`,
    );
  }
  if (typeof pool?.query !== 'function' || typeof pool.connect !== 'function') {
    throw new IdempotencyConfigInvalidError(
      'createPostgresStore: options.pool must be a pg Pool (with query() and connect()).',
    );
  }
  const table = quoteIdentifier(tableName, 'table');
  quoteIdentifier(migrationsTable, 'migrationsTable');
  const channelIdentifier = quoteIdentifier(channel, 'channel', false);
  if (!Number.isSafeInteger(sweepBatchSize) || sweepBatchSize < 1) {
    throw new IdempotencyConfigInvalidError(
      `sweepBatchSize: expected a positive integer, got ${JSON.stringify(sweepBatchSize)}`,
    );
  }
  const pollMs = parseDuration(pollInterval, 'pollInterval');
  const sweepMs = sweepInterval === false ? undefined : parseDuration(sweepInterval, 'sweepInterval');

  const CLAIM = claimSql(table, synchronousCommit);
  const COMPLETE = completeSql(table, synchronousCommit);
  const RELEASE = releaseSql(table, synchronousCommit);
  const RENEW = renewSql(table, synchronousCommit);
  const SAVE_STEP = saveStepSql(table, synchronousCommit);
  const HELD = heldSql(table);
  const SWEEP = sweepSql(table);

  let closed = false;
  let migrating: Promise<void> | undefined;
  function report(error: unknown): void {
    try {
      onBackgroundError?.(translateError(error, tableName));
    } catch {
      // A throwing callback must not take the timer or the listener down with it.
    }
  }

  function migrate(): Promise<PostgresMigrationResult> {
    return migratePostgres(pool, { table: tableName, migrationsTable });
  }

  function ready(): Promise<void> {
    if (!migrating) {
      const attempt = migrate().then(() => undefined);
      migrating = attempt;
      // A failed attempt (database down at boot) is retried by the next call, not cached.
      attempt.catch(() => {
        if (migrating === attempt) migrating = undefined;
      });
    }
    return migrating;
  }

  /** One of the store's statements on the pool or a client: prepared under its name unless turned off. */
  function send(on: PostgresQueryable, text: string, values: unknown[]): Promise<PostgresQueryResult> {
    return preparedStatements ? on.query({ name: statementName(text), text, values }) : on.query(text, values);
  }

  async function run(text: string, values: unknown[]): Promise<PostgresQueryResult> {
    if (autoMigrate) await ready();
    try {
      return await send(pool, text, values);
    } catch (error) {
      throw translateError(error, tableName);
    }
  }

  // Claims and completions, the two writes of every request, share commits (see postgres-group-commit.ts).
  const claimBatch = groupCommit(
    async (items: (ClaimInput & { claimId: string })[]) => {
      const { rows } = await run(CLAIM, [
        items.map((i) => i.key),
        items.map((i) => i.fingerprint),
        items.map((i) => i.leaseMs),
        items.map((i) => i.ttlMs),
        items.map((i) => i.claimId),
      ]);
      const byKey = new Map(rows.map((row) => [row.key as string, row]));
      return items.map((item) => claimResult(item, byKey.get(item.key)));
    },
    { maxBatch: GROUP_COMMIT_MAX, maxInFlight: GROUP_COMMIT_IN_FLIGHT, keyOf: (item) => item.key },
  );
  const completeBatch = groupCommit(
    async (items: { key: string; token: number; response: StoredResponse; ttlMs: number }[]) => {
      const { rows } = await run(COMPLETE, [
        items.map((i) => i.key),
        items.map((i) => String(i.token)),
        items.map((i) => i.response.status),
        items.map((i) => JSON.stringify(i.response.headers)),
        items.map((i) => asBuffer(i.response.body)),
        items.map((i) => i.ttlMs),
        channel,
      ]);
      const completed = new Set(rows.map((row) => row.key as string));
      return items.map((item): FencedResult => (completed.has(item.key) ? 'ok' : 'stale'));
    },
    { maxBatch: GROUP_COMMIT_MAX, maxInFlight: GROUP_COMMIT_IN_FLIGHT, keyOf: (item) => item.key },
  );

  async function fenced(text: string, key: string, token: number, values: unknown[]): Promise<FencedResult> {
    if (!Number.isSafeInteger(token)) return 'stale';
    const result = await run(text, [key, String(token), ...values]);
    return result.rowCount === 1 ? 'ok' : 'stale';
  }

  function claim(input: ClaimInput): Promise<ClaimResult> {
    // The id is made once: a batch that failed is retried claim by claim with the same ids, so a
    // claim that did commit before its connection failed is recognised as ours.
    return claimBatch({ ...input, claimId: randomUUID() });
  }

  function claimResult(input: ClaimInput & { claimId: string }, row: Record<string, unknown> | undefined): ClaimResult {
    // INSERT … ON CONFLICT … RETURNING always yields the row; none means something below SQL is wrong.
    if (!row)
      throw new IdempotencyStoreUnavailableError(`The PostgreSQL store's claim returned no row (table ${tableName}).`);
    if (row.claim_id === input.claimId) {
      return {
        status: 'acquired',
        token: parseToken(row.token),
        steps: json(row.steps, {}) as Record<string, string>,
        recovered: row.recovered === true,
      };
    }
    if (row.fingerprint !== input.fingerprint) return { status: 'mismatch' };
    if (row.state === 'completed') {
      return {
        status: 'replay',
        response: {
          status: Number(row.status),
          headers: json(row.headers, []) as [string, string][],
          body: toBytes(row.body),
        },
      };
    }
    if (row.state === 'in_flight') {
      return { status: 'in_flight', retryAfterMs: Math.max(1, Math.ceil(Number(row.retry_after_ms))) };
    }
    throw new IdempotencyStoreUnavailableError(
      `The PostgreSQL store read an unknown record state after a claim: ${String(row.state)}`,
    );
  }

  async function complete(key: string, token: number, response: StoredResponse, ttlMs: number): Promise<FencedResult> {
    if (!Number.isSafeInteger(token)) return 'stale';
    return completeBatch({ key, token, response, ttlMs });
  }

  function release(key: string, token: number, ttlMs: number): Promise<FencedResult> {
    return fenced(RELEASE, key, token, [ttlMs, channel]);
  }

  function renew(key: string, token: number, leaseMs: number): Promise<FencedResult> {
    return fenced(RENEW, key, token, [leaseMs]);
  }

  function saveStep(key: string, token: number, name: string, value: string): Promise<FencedResult> {
    return fenced(SAVE_STEP, key, token, [name, value]);
  }

  async function sweep(): Promise<number> {
    let deleted = 0;
    for (let batch = 0; batch < SWEEP_MAX_BATCHES && !closed; batch++) {
      const result = await run(SWEEP, [sweepBatchSize]);
      const count = result.rowCount ?? 0;
      deleted += count;
      if (count < sweepBatchSize) break;
    }
    return deleted;
  }

  const sweeper = startSweeper(sweepMs, sweep, report);

  const transaction = createPostgresTransaction({
    pool,
    saveStep: SAVE_STEP,
    query: send,
    ready: () => (autoMigrate ? ready() : Promise.resolve()),
    translate: (error) => translateError(error, tableName),
  });

  const changes = createChangeListener({
    pool,
    channel,
    channelIdentifier,
    pollMs,
    held: async (key) => (await run(HELD, [key])).rowCount !== 0,
    report,
  });

  async function close(): Promise<void> {
    if (closed) return;
    closed = true;
    await Promise.all([changes.close(), sweeper.stop()]);
  }

  /** A health check only (`SELECT 1` through the pool): requests never wait on it. */
  async function ping(): Promise<void> {
    await pool.query('SELECT 1');
  }

  return {
    claim,
    complete,
    release,
    renew,
    saveStep,
    transaction,
    waitForChange: changes.waitForChange,
    migrate,
    sweep,
    close,
    ping,
    ...createPostgresOperations({ run, table }),
  };
}
