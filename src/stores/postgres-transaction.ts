/**
 * The PostgreSQL store's `transaction`: the application's writes and idempo's step in one
 * transaction on one pooled connection, so they commit together or not at all.
 *
 * ```
 * BEGIN
 *   work(client)                 the application's writes; its result becomes the step's text
 *   UPDATE … steps … WHERE FENCE  the step, fenced by the token; it locks the record's row
 *   ├─ 1 row ─▶ COMMIT            effect and step together ('ok')
 *   └─ 0 rows ▶ ROLLBACK          the token lost the record: effect undone ('stale')
 * ```
 *
 * Why the fence comes last and not first: locking the record at `BEGIN` would make a retry's
 * claim wait on this transaction for as long as the application's work takes (and forever on an
 * owner stalled inside it). Last, the row is locked only from the fenced `UPDATE` to the
 * `COMMIT`: a claim that takes the key over before it makes the `UPDATE` find no row (rolled
 * back); one that comes after waits for the `COMMIT` and then sees the step (READ COMMITTED
 * re-reads the row it waited for), so it replays the result instead of running the work again.
 *
 * @module
 */
import type { FencedResult, TransactionStep, TransactionWork } from '../vocabulary/index.js';
import type { PostgresPool, PostgresPoolClient, PostgresQueryResult } from './postgres-client.js';

/** What the transaction needs of the store. */
export interface PostgresTransactionOptions {
  pool: PostgresPool;
  /** The store's save-step statement: $1 key, $2 token (text), $3 name, $4 JSON text. */
  saveStep: string;
  /** Runs a statement on `client` the way the store runs its own (prepared or not). */
  query(client: PostgresPoolClient, text: string, values: unknown[]): Promise<PostgresQueryResult>;
  /** Makes sure the table exists first (`autoMigrate`); resolves at once otherwise. */
  ready(): Promise<void>;
  /** The store's error translation (SQLSTATE → coded errors). */
  translate(error: unknown): unknown;
}

/** Returns the store's `transaction` operation. */
export function createPostgresTransaction(options: PostgresTransactionOptions) {
  const { pool, saveStep, query, ready, translate } = options;

  return async function transaction(step: TransactionStep | undefined, work: TransactionWork): Promise<FencedResult> {
    if (step !== undefined && !Number.isSafeInteger(step.token)) return 'stale';
    await ready();
    const client = await pool.connect();
    // A connection in an unknown state (an error event, a failed BEGIN, COMMIT or ROLLBACK) is
    // destroyed rather than given back to the pool.
    let broken: Error | undefined;
    const onError = (error: Error) => {
      broken = error;
    };
    client.on('error', onError);
    const rollBack = () =>
      client.query('ROLLBACK').then(
        () => undefined,
        (error: unknown) => {
          broken = asError(error);
        },
      );
    try {
      try {
        await client.query('BEGIN');
      } catch (error) {
        broken = asError(error);
        throw error;
      }
      let text: string;
      try {
        text = await work(client);
      } catch (error) {
        // The application's own error, as it threw it.
        await rollBack();
        throw error;
      }
      if (step !== undefined) {
        let saved: PostgresQueryResult;
        try {
          saved = await query(client, saveStep, [step.key, String(step.token), step.name, text]);
        } catch (error) {
          await rollBack();
          throw translate(error);
        }
        if (saved.rowCount !== 1) {
          await rollBack();
          return 'stale';
        }
      }
      try {
        await client.query('COMMIT');
      } catch (error) {
        // The transaction is over, committed or not (a lost reply): effect and step went together.
        broken = asError(error);
        throw translate(error);
      }
      return 'ok';
    } finally {
      (client as unknown as { off?(event: string, listener: (error: Error) => void): void }).off?.('error', onError);
      client.release(broken);
    }
  };
}

function asError(error: unknown): Error {
  return error instanceof Error ? error : new Error(String(error));
}
