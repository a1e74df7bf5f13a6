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
import { hash, randomUUID } from 'node:crypto';
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
import {
  type PostgresNotification,
  type PostgresPool,
  type PostgresQueryResult,
  quoteIdentifier,
  translateError,
} from './postgres-client.js';
import {
  DEFAULT_MIGRATIONS_TABLE,
  DEFAULT_TABLE,
  migratePostgres,
  type PostgresMigrateOptions,
  type PostgresMigrationResult,
} from './postgres-migrate.js';

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
}

const statementNames = new Map<string, string>();

/** A statement's name: a hash of its text, so two tables' statements never share a name on one connection. */
function statementName(text: string): string {
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `idempo_${hash('sha256', text, 'hex').slice(0, 24)}`;
    statementNames.set(text, name);
  }
  return name;
}

/** Most sweep batches in one run, so one run is bounded even after a long outage. */
const SWEEP_MAX_BATCHES = 100;

/**
 * The claim: one `INSERT … ON CONFLICT DO UPDATE … RETURNING` statement, so one round trip.
 * Params: $1 key, $2 fingerprint, $3 lease ms, $4 ttl ms, $5 this claim's random id.
 *
 * Why it is atomic, and why the update never has a `WHERE`: under READ COMMITTED, a conflicting
 * insert waits for any concurrent writer of the row, locks the row and evaluates `DO UPDATE` on
 * its latest committed version, so of N concurrent claims each sees the previous one's result and
 * exactly one can take the row. A conditional `DO UPDATE … WHERE` would return no row when the
 * condition fails, and reading the row separately (a CTE `SELECT`, or a second query) sees an
 * older snapshot, which for a row inserted by a claim that committed after this statement began
 * is no row at all. So the update always happens: for `keep` it writes every column back
 * unchanged, and `RETURNING` always yields the locked, current row. The row itself says whether
 * this claim won: `claim_id` equals our id only if this statement wrote it. The cost is a row
 * version per replay or refusal (a HOT update, thanks to the table's fillfactor).
 *
 * `c.now` is `clock_timestamp()` taken once, so leases, expiry and the fresh token all come from
 * the database clock: app servers with skewed clocks still agree. `excluded` carries the values a
 * fresh record would get, so the update reuses them (`excluded.updated_at` is "now").
 */
function claimSql(table: string): string {
  return `
INSERT INTO ${table} AS r (key, fingerprint, state, token, claim_id, recovered, lease_until, expires_at, steps, updated_at)
SELECT $1, $2, 'in_flight', floor(extract(epoch FROM c.now) * 1000)::bigint, $5::uuid, false,
       c.now + $3::float8 * interval '1 millisecond',
       c.now + greatest($3::float8, $4::float8) * interval '1 millisecond',
       '{}'::jsonb, c.now
FROM (SELECT clock_timestamp() AS now) AS c
ON CONFLICT (key) DO UPDATE SET
  (fingerprint, state, token, claim_id, recovered, lease_until, expires_at, steps, status, headers, body, updated_at) = (
    SELECT
      CASE d.action WHEN 'restart' THEN excluded.fingerprint ELSE r.fingerprint END,
      CASE d.action WHEN 'keep' THEN r.state ELSE 'in_flight' END,
      CASE d.action WHEN 'keep' THEN r.token
                    WHEN 'restart' THEN greatest(excluded.token, r.token + 1)
                    ELSE r.token + 1 END,
      CASE d.action WHEN 'keep' THEN r.claim_id ELSE excluded.claim_id END,
      CASE d.action WHEN 'keep' THEN r.recovered ELSE d.action = 'recover' END,
      CASE d.action WHEN 'keep' THEN r.lease_until ELSE excluded.lease_until END,
      CASE d.action WHEN 'keep' THEN r.expires_at ELSE excluded.expires_at END,
      CASE d.action WHEN 'restart' THEN '{}'::jsonb ELSE r.steps END,
      CASE d.action WHEN 'restart' THEN NULL ELSE r.status END,
      CASE d.action WHEN 'restart' THEN NULL ELSE r.headers END,
      CASE d.action WHEN 'restart' THEN NULL ELSE r.body END,
      CASE d.action WHEN 'keep' THEN r.updated_at ELSE excluded.updated_at END
    FROM (SELECT CASE
      WHEN r.expires_at <= excluded.updated_at
       AND NOT (r.state = 'in_flight' AND r.lease_until > excluded.updated_at) THEN 'restart'
      WHEN r.fingerprint <> excluded.fingerprint THEN 'keep'
      WHEN r.state = 'released' THEN 'reclaim'
      WHEN r.state = 'in_flight' AND r.lease_until <= excluded.updated_at THEN 'recover'
      ELSE 'keep'
    END AS action) AS d
  )
RETURNING
  r.claim_id = $5::uuid AS acquired,
  r.fingerprint = $2 AS same_fingerprint,
  r.state,
  r.token::text AS token,
  r.recovered,
  CASE WHEN r.claim_id = $5::uuid THEN r.steps END AS steps,
  CASE WHEN r.state = 'completed' AND r.fingerprint = $2 THEN r.status END AS status,
  CASE WHEN r.state = 'completed' AND r.fingerprint = $2 THEN r.headers END AS headers,
  CASE WHEN r.state = 'completed' AND r.fingerprint = $2 THEN r.body END AS body,
  CASE WHEN r.state = 'in_flight' THEN extract(epoch FROM r.lease_until - clock_timestamp())::float8 * 1000 END AS retry_after_ms`;
}

/**
 * The fence every write shares: the row must still be `in_flight` under this token and not
 * expired. A single `UPDATE … WHERE` takes the row lock and re-checks the condition on the latest
 * row version, so a write racing a takeover either lands before it (and the takeover then sees
 * the new state) or finds the token moved on and changes nothing.
 */
const FENCE = `r.key = $1 AND r.token = $2::bigint AND r.state = 'in_flight' AND r.expires_at > c.now`;

/**
 * Complete: stores the response, drops the lease and the steps, keeps the row for the ttl, and
 * announces the key, all in one statement; `NOTIFY` is delivered when it commits, so a woken
 * waiter always reads the completed row. Params: $1 key, $2 token, $3 status, $4 headers (JSON),
 * $5 body, $6 ttl ms, $7 channel.
 */
function completeSql(table: string): string {
  return `
WITH changed AS (
  UPDATE ${table} AS r
  SET state = 'completed', status = $3::integer, headers = $4::jsonb, body = $5::bytea, steps = '{}'::jsonb,
      lease_until = NULL, expires_at = c.now + $6::float8 * interval '1 millisecond', updated_at = c.now
  FROM (SELECT clock_timestamp() AS now) AS c
  WHERE ${FENCE}
  RETURNING r.key
)
SELECT pg_notify($7, changed.key) FROM changed`;
}

/** Release: back to `released` with the steps kept, for the ttl; announces the key. Params: $1 key, $2 token, $3 ttl ms, $4 channel. */
function releaseSql(table: string): string {
  return `
WITH changed AS (
  UPDATE ${table} AS r
  SET state = 'released', lease_until = NULL, expires_at = c.now + $3::float8 * interval '1 millisecond', updated_at = c.now
  FROM (SELECT clock_timestamp() AS now) AS c
  WHERE ${FENCE}
  RETURNING r.key
)
SELECT pg_notify($4, changed.key) FROM changed`;
}

/** Renew: pushes the lease, and the expiry with it when the lease would pass it. Params: $1 key, $2 token, $3 lease ms. */
function renewSql(table: string): string {
  return `
UPDATE ${table} AS r
SET lease_until = c.now + $3::float8 * interval '1 millisecond',
    expires_at = greatest(r.expires_at, c.now + $3::float8 * interval '1 millisecond'),
    updated_at = c.now
FROM (SELECT clock_timestamp() AS now) AS c
WHERE ${FENCE}`;
}

/** Save a step: merges one name into the steps object (same name overwrites). Params: $1 key, $2 token, $3 name, $4 JSON text. */
function saveStepSql(table: string): string {
  return `
UPDATE ${table} AS r
SET steps = r.steps || jsonb_build_object($3::text, $4::text), updated_at = c.now
FROM (SELECT clock_timestamp() AS now) AS c
WHERE ${FENCE}`;
}

/** Whether a waiter should keep waiting: a row still held under a live lease. Params: $1 key. */
function heldSql(table: string): string {
  return `SELECT 1 FROM ${table} WHERE key = $1 AND state = 'in_flight' AND lease_until > clock_timestamp()`;
}

/**
 * One sweep batch: deletes up to $1 expired rows, never a live in_flight one. The inner
 * `SELECT … FOR UPDATE SKIP LOCKED` locks the rows it picks (skipping any a claim is busy with,
 * and any another instance's sweep took), so nothing can revive them before the `DELETE`; and a
 * row a claim restarted in between has a new `ctid`, so it is not in the list. `ctid` makes the
 * delete a TID scan: no second index lookup. The cut-off is `statement_timestamp()` (the
 * database clock when the statement began) rather than `clock_timestamp()`: a volatile function
 * cannot be an index condition, and the `expires_at` index is what keeps a batch from reading the
 * whole table.
 */
function sweepSql(table: string): string {
  return `
DELETE FROM ${table}
WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM ${table}
  WHERE expires_at <= statement_timestamp() AND (state <> 'in_flight' OR lease_until <= statement_timestamp())
  LIMIT $1
  FOR UPDATE SKIP LOCKED
))`;
}

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
  } = options ?? ({} as PostgresStoreOptions);
  if (typeof pool?.query !== 'function' || typeof pool.connect !== 'function') {
    throw new IdempotencyConfigError(
      'createPostgresStore: options.pool must be a pg Pool (with query() and connect()).',
    );
  }
  const table = quoteIdentifier(tableName, 'table');
  quoteIdentifier(migrationsTable, 'migrationsTable');
  const channelIdentifier = quoteIdentifier(channel, 'channel', false);
  if (!Number.isSafeInteger(sweepBatchSize) || sweepBatchSize < 1) {
    throw new IdempotencyConfigError(
      `sweepBatchSize: expected a positive integer, got ${JSON.stringify(sweepBatchSize)}`,
    );
  }
  const pollMs = parseDuration(pollInterval, 'pollInterval');
  const sweepMs = sweepInterval === false ? undefined : parseDuration(sweepInterval, 'sweepInterval');

  const CLAIM = claimSql(table);
  const COMPLETE = completeSql(table);
  const RELEASE = releaseSql(table);
  const RENEW = renewSql(table);
  const SAVE_STEP = saveStepSql(table);
  const HELD = heldSql(table);
  const SWEEP = sweepSql(table);

  let closed = false;
  let migrating: Promise<void> | undefined;
  let sweeping: Promise<unknown> | undefined;
  /** The LISTEN connection being opened or open; undefined when there is none. */
  let listener: Promise<Listener> | undefined;
  /** Resolvers of pending waits, by key. */
  const waiters = new Map<string, Set<() => void>>();

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

  async function run(text: string, values: unknown[]): Promise<PostgresQueryResult> {
    if (autoMigrate) await ready();
    try {
      return await (preparedStatements
        ? pool.query({ name: statementName(text), text, values })
        : pool.query(text, values));
    } catch (error) {
      throw translateError(error, tableName);
    }
  }

  async function fenced(text: string, key: string, token: number, values: unknown[]): Promise<FencedResult> {
    if (!Number.isSafeInteger(token)) return 'stale';
    const result = await run(text, [key, String(token), ...values]);
    return result.rowCount === 1 ? 'ok' : 'stale';
  }

  async function claim(input: ClaimInput): Promise<ClaimResult> {
    const { rows } = await run(CLAIM, [input.key, input.fingerprint, input.leaseMs, input.ttlMs, randomUUID()]);
    const row = rows[0];
    // INSERT … ON CONFLICT … RETURNING always yields the row; none means something below SQL is wrong.
    if (!row) throw new IdempotencyStoreError(`The PostgreSQL store's claim returned no row (table ${tableName}).`);
    if (row.acquired === true) {
      return {
        status: 'acquired',
        token: parseToken(row.token),
        steps: json(row.steps, {}) as Record<string, string>,
        recovered: row.recovered === true,
      };
    }
    if (row.same_fingerprint !== true) return { status: 'mismatch' };
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
    throw new Error(`idempo postgres store: unexpected record state ${String(row.state)} after a claim`);
  }

  function complete(key: string, token: number, response: StoredResponse, ttlMs: number): Promise<FencedResult> {
    const body = Buffer.from(response.body.buffer, response.body.byteOffset, response.body.byteLength);
    return fenced(COMPLETE, key, token, [response.status, JSON.stringify(response.headers), body, ttlMs, channel]);
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

  function sweepInBackground(): void {
    if (sweeping || closed) return;
    sweeping = sweep()
      .catch(report)
      .finally(() => {
        sweeping = undefined;
      });
  }

  const sweepTimer = sweepMs === undefined ? undefined : setInterval(sweepInBackground, sweepMs);
  sweepTimer?.unref();

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
    client.on('end', () => drop(closed ? undefined : new Error('idempo postgres store: the LISTEN connection ended')));
    try {
      await client.query(`LISTEN ${channelIdentifier}`);
    } catch (error) {
      drop(error instanceof Error ? error : new Error(String(error)));
      throw error;
    }
    if (closed) {
      drop();
      throw new Error('idempo postgres store: closed');
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
        run(HELD, [key]).then(
          (result) => {
            if (done) return;
            if (result.rowCount === 0) finish();
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
    if (sweepTimer) clearInterval(sweepTimer);
    wakeAll();
    const pending = listener;
    listener = undefined;
    const open = await pending?.catch(() => undefined);
    open?.drop();
    await sweeping;
  }

  /** A health check only (`SELECT 1` through the pool): requests never wait on it. */
  async function ping(): Promise<void> {
    await pool.query('SELECT 1');
  }

  return { claim, complete, release, renew, saveStep, waitForChange, migrate, sweep, close, ping };
}

/** The open LISTEN connection, as far as the store needs to know it. */
interface Listener {
  /** Destroys the connection and wakes every waiter. */
  drop(error?: Error): void;
}

/** Tokens are `bigint` in the table and travel as text; anything outside a safe integer is a corrupt row. */
function parseToken(value: unknown): number {
  const token = typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(token))
    throw new Error(`idempo postgres store: token ${String(value)} is not a safe integer`);
  return token;
}

/** `pg` parses `jsonb` itself; an app that replaced that type parser hands us text instead. */
function json(value: unknown, empty: unknown): unknown {
  if (value === null || value === undefined) return empty;
  return typeof value === 'string' ? JSON.parse(value) : value;
}

/** `pg` returns `bytea` as a Buffer: hand out a plain Uint8Array view of the same memory. */
function toBytes(value: unknown): Uint8Array {
  if (value instanceof Uint8Array) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  return new Uint8Array();
}
