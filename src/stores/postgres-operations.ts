/**
 * The PostgreSQL store's operations side (`inspect`, `list`, `delete`, `rewriteResponse`), one statement each, on
 * the database clock like the rest of the store.
 *
 * @module
 */
import type {
  DeleteResult,
  RecordInfo,
  RecordPage,
  RecordQuery,
  RecordState,
  RewriteResult,
  StoredResponse,
} from '../vocabulary/index.js';
import { asBuffer } from './bytes.js';
import { outlastToken, pageLimit } from './operations.js';
import type { PostgresQueryResult } from './postgres-client.js';
import { json, parseToken, toBytes } from './postgres-rows.js';

/** A row that is still current: not expired, or in flight under a live lease. */
const CURRENT = `(expires_at > clock_timestamp() OR (state = 'in_flight' AND lease_until > clock_timestamp()))`;

/** Times as ms since the epoch, and the token as text (a bigint). */
const COLUMNS = `key, state, token::text AS token,
  (extract(epoch FROM lease_until) * 1000)::float8 AS lease_until_ms,
  (extract(epoch FROM expires_at) * 1000)::float8 AS expires_at_ms,
  steps, status, headers, body`;

const NOW_MS = `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;

function inspectSql(table: string): string {
  return `SELECT ${COLUMNS} FROM ${table} WHERE key = $1 AND ${CURRENT}`;
}

/** $1 the last key of the previous page, $2 a state or null, $3 the least age in ms, $4 the page size. */
function listSql(table: string): string {
  return `SELECT ${COLUMNS} FROM ${table}
WHERE key > $1 AND ${CURRENT} AND ($2::text IS NULL OR state = $2) AND token <= ${NOW_MS} - $3::bigint
ORDER BY key LIMIT $4`;
}

/**
 * Locks the current row, deletes it unless it is live in flight and $2 (force) is false, and
 * says which happened. No row: absent (an expired one is left to the sweep).
 */
function deleteSql(table: string): string {
  return `WITH target AS (
  SELECT key, token, state = 'in_flight' AND lease_until > clock_timestamp() AS live
  FROM ${table} WHERE key = $1 AND ${CURRENT} FOR UPDATE
), gone AS (
  DELETE FROM ${table} r USING target WHERE r.key = target.key AND ($2::boolean OR NOT target.live) RETURNING r.key
)
SELECT target.live, target.token::text AS token, (SELECT count(*) FROM gone)::int AS deleted FROM target`;
}

/**
 * Replaces the response of the current completed row that still holds body $6 (a compare-and-swap
 * in one UPDATE, which re-checks its WHERE on the latest row version); expiry and fingerprint stay.
 * Params: $1 key, $2 status, $3 headers (JSON), $4 body, $5 the expected body.
 */
function rewriteSql(table: string): string {
  return `UPDATE ${table} SET status = $2::integer, headers = $3::jsonb, body = $4::bytea
WHERE key = $1 AND state = 'completed' AND expires_at > clock_timestamp() AND body = $5::bytea`;
}

/** What the operations need of the store: its statement runner (prepared, migrated, errors translated) and table. */
export interface PostgresOperationsOptions {
  run(text: string, values: unknown[]): Promise<PostgresQueryResult>;
  table: string;
}

/** The store's `inspect`, `list`, `delete` and `rewriteResponse`. */
export interface PostgresOperations {
  inspect(key: string): Promise<RecordInfo | undefined>;
  list(query?: RecordQuery): Promise<RecordPage>;
  delete(key: string, options?: { force?: boolean }): Promise<DeleteResult>;
  rewriteResponse(key: string, expectedBody: Uint8Array, response: StoredResponse): Promise<RewriteResult>;
}

export function createPostgresOperations({ run, table }: PostgresOperationsOptions): PostgresOperations {
  const INSPECT = inspectSql(table);
  const LIST = listSql(table);
  const DELETE = deleteSql(table);
  const REWRITE = rewriteSql(table);
  const NOW = `SELECT ${NOW_MS}::text AS now`;

  return {
    async inspect(key) {
      const row = (await run(INSPECT, [key])).rows[0];
      return row === undefined ? undefined : infoOf(row);
    },
    async list(query = {}) {
      const limit = pageLimit(query.limit);
      const { rows } = await run(LIST, [query.cursor ?? '', query.state ?? null, query.olderThanMs ?? 0, limit + 1]);
      const records = rows.slice(0, limit).map(infoOf);
      return rows.length > limit ? { records, cursor: records[records.length - 1]?.key as string } : { records };
    },
    async delete(key, options = {}) {
      const row = (await run(DELETE, [key, options.force === true])).rows[0];
      if (row === undefined) return 'absent';
      if (row.deleted !== 1) return 'in_flight';
      await outlastToken(Number(row.token), async () => Number((await run(NOW, [])).rows[0]?.now));
      return 'deleted';
    },
    async rewriteResponse(key, expectedBody, response) {
      const { rowCount } = await run(REWRITE, [
        key,
        response.status,
        JSON.stringify(response.headers),
        asBuffer(response.body),
        asBuffer(expectedBody),
      ]);
      return rowCount === 0 ? 'changed' : 'ok';
    },
  };
}

function infoOf(row: Record<string, unknown>): RecordInfo {
  const state = row.state as RecordState;
  const token = parseToken(row.token);
  return {
    key: row.key as string,
    state,
    token,
    // A fresh row's token is the database clock in ms; each takeover adds one.
    createdAt: token,
    ...(state === 'in_flight' ? { leaseUntil: Math.round(Number(row.lease_until_ms)) } : {}),
    expiresAt: Math.round(Number(row.expires_at_ms)),
    steps: Object.keys(json(row.steps, {}) as object),
    ...(state === 'completed'
      ? {
          response: {
            status: Number(row.status),
            headers: json(row.headers, []) as [string, string][],
            body: toBytes(row.body),
          },
        }
      : {}),
  };
}
