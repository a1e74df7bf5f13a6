/**
 * Group commit for the PostgreSQL store: the claims (or completions) issued while the previous
 * batch's statement is in flight go to the database together, as one statement and one commit.
 *
 * @module
 */
import { atCheckPhase } from './check-phase.js';

/** Options of {@link groupCommit}. */
export interface GroupCommitOptions<I> {
  /** Most items in one statement. */
  maxBatch: number;
  /** Most statements of this kind in flight at once; the rest wait and join the next batch. */
  maxInFlight: number;
  /** Items with one key never share a statement (a row may change once per statement). */
  keyOf(item: I): string;
}

interface Pending<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

/**
 * Returns a function that runs `runBatch` over batches of the items it is given and answers each
 * caller with its own result. `runBatch` receives the items sorted by key, each key once, and
 * returns one result per item, in that order.
 *
 * Every statement that changes the table costs a commit, and on PostgreSQL with
 * `synchronous_commit = on` a commit waits for the WAL to reach the disk: that wait, not the SQL,
 * bounds how many claims and completions a pool can make each second. While a statement is in
 * flight, the items issued meanwhile queue; when one of the `maxInFlight` slots frees, they leave
 * together. So under load a batch holds what arrived during one commit, while a lone request
 * waits for nothing but the end of the current turn of the event loop. Sorted keys make every
 * batch lock its rows in one order, so two batches never deadlock on each other.
 *
 * When a batch of several items fails, each of its items is tried again in a statement of its
 * own, so one item that the database refuses fails alone. Nothing is answered before its
 * statement has committed.
 */
export function groupCommit<I, O>(
  runBatch: (items: I[]) => Promise<O[]>,
  options: GroupCommitOptions<I>,
): (item: I) => Promise<O> {
  const { maxBatch, maxInFlight, keyOf } = options;
  let queue: Pending<I, O>[] = [];
  let inFlight = 0;
  let scheduled = false;

  function take(): Pending<I, O>[] {
    const batch = new Map<string, Pending<I, O>>();
    const left: Pending<I, O>[] = [];
    for (const pending of queue) {
      const key = keyOf(pending.item);
      if (batch.size < maxBatch && !batch.has(key)) batch.set(key, pending);
      else left.push(pending);
    }
    queue = left;
    return [...batch.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, pending]) => pending);
  }

  function pump(): void {
    scheduled = false;
    while (inFlight < maxInFlight && queue.length > 0) {
      const batch = take();
      inFlight++;
      send(batch).finally(() => {
        inFlight--;
        pump();
      });
    }
  }

  async function send(batch: Pending<I, O>[]): Promise<void> {
    let results: O[];
    try {
      results = await runBatch(batch.map((pending) => pending.item));
    } catch (error) {
      if (batch.length === 1) (batch[0] as Pending<I, O>).reject(error);
      else await Promise.all(batch.map((pending) => send([pending])));
      return;
    }
    for (let i = 0; i < batch.length; i++) (batch[i] as Pending<I, O>).resolve(results[i] as O);
  }

  return (item: I) =>
    new Promise<O>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      if (!scheduled && inFlight < maxInFlight) {
        // Gathers what this turn of the event loop issues; under load the slots are busy and
        // `pump` runs when one frees.
        scheduled = true;
        atCheckPhase(pump);
      }
    });
}
