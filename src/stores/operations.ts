/**
 * What the stores share for operations (`inspect`, `list`, `delete`): the page size rule, and the
 * wait that keeps a forced delete from breaking the fencing rule.
 *
 * @module
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { IdempotencyConfigInvalidError } from '../vocabulary/index.js';

/** Records in one page of `list` when the query does not say. */
export const DEFAULT_PAGE_LIMIT = 100;
/** The most records one page of `list` may hold. */
export const MAX_PAGE_LIMIT = 10_000;

/** The page size a `list` query asks for, checked. */
export function pageLimit(limit: number | undefined): number {
  if (limit === undefined) return DEFAULT_PAGE_LIMIT;
  if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_PAGE_LIMIT) {
    throw new IdempotencyConfigInvalidError(`list: limit must be an integer from 1 to ${MAX_PAGE_LIMIT}, got ${limit}`);
  }
  return limit;
}

/**
 * Resolves once `now()` has passed `token`. A store starts a new record's token at its clock's
 * time in ms (at least), so after a delete has waited this long, the key's next owner gets a
 * token above the deleted one: an owner still running when its record was deleted can never
 * complete the new record. Almost always this waits not at all, or a millisecond.
 */
export async function outlastToken(token: number, now: () => number | Promise<number> = Date.now): Promise<void> {
  for (let current = await now(); current <= token; current = await now()) {
    await sleep(Math.min(1_000, token - current + 1));
  }
}
