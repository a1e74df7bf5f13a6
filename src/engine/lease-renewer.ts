/** Something holding a lease that must be renewed while it runs. */
export interface Renewable {
  /** When the lease was last taken or renewed (ms since the epoch). */
  renewedAt: number;
  /** True while a renewal is on its way to the store. */
  renewing: boolean;
  /** Where the renewer keeps it (managed by the renewer; -1 when not kept). */
  renewerSlot: number;
  /** Starts one renewal; updates `renewedAt` on success and leaves the set when the lease is lost. */
  renew(): void;
}

/**
 * One timer per engine renews every running execution's lease, instead of one `setInterval` per
 * execution: creating and clearing a timer per request was a large share of the node:http
 * adapter's CPU per request (timer lists made and dropped, the loop's timer re-armed).
 *
 * It ticks every sixth of the lease and renews an execution once a third of the lease has passed
 * since its last renewal, so the first renewal comes between a third and a half of the lease, and
 * a failed one is tried again on each following tick until the lease runs out. The timer is
 * unreferenced (it never keeps a process alive) and stops at the first tick that finds nothing
 * running. Executions sit in an array and know their slot: adding and removing one is two
 * stores, where a Set had to give each new object an identity hash.
 */
export class LeaseRenewer {
  readonly #live: Renewable[] = [];
  readonly #dueAfterMs: number;
  readonly #tickMs: number;
  #timer: ReturnType<typeof setInterval> | undefined;

  constructor(leaseMs: number) {
    this.#dueAfterMs = leaseMs / 3;
    this.#tickMs = Math.max(1, Math.floor(leaseMs / 6));
  }

  add(execution: Renewable): void {
    execution.renewerSlot = this.#live.length;
    this.#live.push(execution);
    if (this.#timer === undefined) {
      this.#timer = setInterval(() => this.#tick(), this.#tickMs);
      this.#timer.unref?.();
    }
  }

  delete(execution: Renewable): void {
    const slot = execution.renewerSlot;
    if (this.#live[slot] !== execution) return;
    const last = this.#live.pop() as Renewable;
    if (last !== execution) {
      this.#live[slot] = last;
      last.renewerSlot = slot;
    }
    execution.renewerSlot = -1;
  }

  #tick(): void {
    if (this.#live.length === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
      return;
    }
    const due = Date.now() - this.#dueAfterMs;
    // renew() settles later, so nothing leaves the array while this loop runs.
    for (const execution of this.#live) {
      if (!execution.renewing && execution.renewedAt <= due) execution.renew();
    }
  }
}
