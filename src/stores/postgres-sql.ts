/**
 * The PostgreSQL store's statements, one per operation, each a single statement so every
 * transition is atomic and costs one round trip; and the names they are prepared under.
 *
 * @module
 */
import { hash } from 'node:crypto';

const statementNames = new Map<string, string>();

/** The `synchronous_commit` levels PostgreSQL accepts, from the most to the least durable. */
export type SynchronousCommit = 'remote_apply' | 'on' | 'remote_write' | 'local' | 'off';

export const SYNCHRONOUS_COMMIT_LEVELS: readonly SynchronousCommit[] = [
  'remote_apply',
  'on',
  'remote_write',
  'local',
  'off',
];

/**
 * The one-row clock every write reads (`c.now`), and with `commit` the statement's own
 * `synchronous_commit`: `set_config(…, true)` lasts until the end of the transaction, and each
 * statement is its own implicit transaction, whose commit reads the setting after the statement
 * ran. So the statement's commit waits as `commit` says, without `BEGIN`/`COMMIT` round trips,
 * and the setting never outlives the statement on the pool's shared connection.
 */
function clock(commit: SynchronousCommit | undefined): string {
  if (commit === undefined) return '(SELECT clock_timestamp() AS now) AS c';
  return `(SELECT clock_timestamp() AS now, set_config('synchronous_commit', '${commit}', true) AS durability) AS c`;
}

/** A statement's name: a hash of its text, so two tables' statements never share a name on one connection. */
export function statementName(text: string): string {
  let name = statementNames.get(text);
  if (name === undefined) {
    name = `idempo_${hash('sha256', text, 'hex').slice(0, 24)}`;
    statementNames.set(text, name);
  }
  return name;
}

/**
 * The claim of a batch of keys: one `INSERT … ON CONFLICT DO UPDATE … RETURNING` statement over
 * arrays, one row per key, so one round trip and one commit for every claim a turn of the event
 * loop issued (a batch of one is a lone claim). Params: $1 keys, $2 fingerprints, $3 lease ms,
 * $4 ttl ms, $5 the claims' random ids; a key appears at most once per batch (a second claim of
 * one row in one statement is an error), and keys come sorted, so two batches lock shared rows in
 * the same order and never deadlock.
 *
 * Why it is atomic, and why the update never has a `WHERE`: under READ COMMITTED, a conflicting
 * insert waits for any concurrent writer of the row, locks the row and evaluates `DO UPDATE` on
 * its latest committed version, so of N concurrent claims each sees the previous one's result and
 * exactly one can take the row. A conditional `DO UPDATE … WHERE` would return no row when the
 * condition fails, and reading the row separately (a CTE `SELECT`, or a second query) sees an
 * older snapshot, which for a row inserted by a claim that committed after this statement began
 * is no row at all. So the update always happens: for `keep` it writes every column back
 * unchanged, and `RETURNING` always yields the locked, current row. The row itself says whether
 * this claim won: its `claim_id` is ours only if this statement wrote it. The cost is a row
 * version per replay or refusal (a HOT update, thanks to the table's fillfactor).
 *
 * `c.now` is `clock_timestamp()` taken once, so leases, expiry and the fresh token all come from
 * the database clock: app servers with skewed clocks still agree. `excluded` carries the values a
 * fresh record would get, so the update reuses them (`excluded.updated_at` is "now").
 */
export function claimSql(table: string, commit?: SynchronousCommit): string {
  return `
INSERT INTO ${table} AS r (key, fingerprint, state, token, claim_id, recovered, lease_until, expires_at, steps, updated_at)
SELECT v.key, v.fingerprint, 'in_flight', floor(extract(epoch FROM c.now) * 1000)::bigint, v.claim_id, false,
       c.now + v.lease_ms * interval '1 millisecond',
       c.now + greatest(v.lease_ms, v.ttl_ms) * interval '1 millisecond',
       '{}'::jsonb, c.now
FROM ${clock(commit)},
     unnest($1::text[], $2::text[], $3::float8[], $4::float8[], $5::uuid[]) WITH ORDINALITY
       AS v(key, fingerprint, lease_ms, ttl_ms, claim_id, position)
ORDER BY v.position
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
  r.key,
  r.claim_id::text AS claim_id,
  r.fingerprint,
  r.state,
  r.token::text AS token,
  r.recovered,
  r.steps,
  CASE WHEN r.state = 'completed' THEN r.status END AS status,
  CASE WHEN r.state = 'completed' THEN r.headers END AS headers,
  CASE WHEN r.state = 'completed' THEN r.body END AS body,
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
 * Complete a batch of records: stores each response, drops the lease and the steps, keeps the row
 * for the ttl, and announces the key, all in one statement, so one commit for every completion
 * of a turn; each row is fenced on its own, and only the rows returned were completed. `NOTIFY`
 * is delivered when it commits, so a woken waiter always reads the completed row. Params: $1
 * keys (sorted, each once), $2 tokens, $3 statuses, $4 headers (JSON texts), $5 bodies, $6 ttl
 * ms, $7 channel.
 */
export function completeSql(table: string, commit?: SynchronousCommit): string {
  return `
WITH changed AS (
  UPDATE ${table} AS r
  SET state = 'completed', status = v.status, headers = v.headers::jsonb, body = v.body, steps = '{}'::jsonb,
      lease_until = NULL, expires_at = c.now + v.ttl_ms * interval '1 millisecond', updated_at = c.now
  FROM ${clock(commit)},
       unnest($1::text[], $2::bigint[], $3::integer[], $4::text[], $5::bytea[], $6::float8[])
         AS v(key, token, status, headers, body, ttl_ms)
  WHERE r.key = v.key AND r.token = v.token AND r.state = 'in_flight' AND r.expires_at > c.now
  RETURNING r.key
)
SELECT changed.key, pg_notify($7, changed.key) FROM changed`;
}

/** Release: back to `released` with the steps kept, for the ttl; announces the key. Params: $1 key, $2 token, $3 ttl ms, $4 channel. */
export function releaseSql(table: string, commit?: SynchronousCommit): string {
  return `
WITH changed AS (
  UPDATE ${table} AS r
  SET state = 'released', lease_until = NULL, expires_at = c.now + $3::float8 * interval '1 millisecond', updated_at = c.now
  FROM ${clock(commit)}
  WHERE ${FENCE}
  RETURNING r.key
)
SELECT pg_notify($4, changed.key) FROM changed`;
}

/** Renew: pushes the lease, and the expiry with it when the lease would pass it. Params: $1 key, $2 token, $3 lease ms. */
export function renewSql(table: string, commit?: SynchronousCommit): string {
  return `
UPDATE ${table} AS r
SET lease_until = c.now + $3::float8 * interval '1 millisecond',
    expires_at = greatest(r.expires_at, c.now + $3::float8 * interval '1 millisecond'),
    updated_at = c.now
FROM ${clock(commit)}
WHERE ${FENCE}`;
}

/** Save a step: merges one name into the steps object (same name overwrites). Params: $1 key, $2 token, $3 name, $4 JSON text. */
export function saveStepSql(table: string, commit?: SynchronousCommit): string {
  return `
UPDATE ${table} AS r
SET steps = r.steps || jsonb_build_object($3::text, $4::text), updated_at = c.now
FROM ${clock(commit)}
WHERE ${FENCE}`;
}

/** Whether a waiter should keep waiting: a row still held under a live lease. Params: $1 key. */
export function heldSql(table: string): string {
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
export function sweepSql(table: string): string {
  return `
DELETE FROM ${table}
WHERE ctid = ANY (ARRAY(
  SELECT ctid FROM ${table}
  WHERE expires_at <= statement_timestamp() AND (state <> 'in_flight' OR lease_until <= statement_timestamp())
  LIMIT $1
  FOR UPDATE SKIP LOCKED
))`;
}
