/**
 * Per-scope limits (`limits`): how many keys one scope may have in flight at once, and how many
 * new keys it may claim within a window, kept in this process's memory.
 *
 * A keyed request is admitted before its claim, so a refused request creates or touches no
 * record: the limiter only refuses new work, and never releases or takes over a key. Admission
 * takes a place in flight and a new key at once (a ticket); the engine gives both back when the
 * claim does not start a run (a replay, a conflict, a mismatch, a store failure), and gives the
 * place back when the run ends. Because the check comes before the claim, it cannot tell a retry
 * of a completed key from a new key: a scope at its limit waits for its replays too.
 *
 * Memory is bounded: at most `maxScopes` scopes are tracked (plus any with keys in flight, each
 * of which is a request this process holds anyway); past it the least recently admitted idle
 * scope is forgotten, and its window starts afresh.
 *
 * @module
 */

/** Sub-windows the new-key window is counted in: a claim leaves the count between 9/10 and all of the window after it. */
const BUCKETS = 10;
/** How many of the least recently admitted scopes are looked at for an idle one to forget. */
const EVICTION_SCAN = 32;

/** The limits of one engine, resolved from `limits`. */
export interface ScopeLimits {
  /** Keys one scope may have in flight at once; `undefined`: no limit. */
  readonly inFlight: number | undefined;
  /** New keys one scope may claim per window; `undefined`: no limit. */
  readonly newKeys: { readonly max: number; readonly windowMs: number } | undefined;
  /** Most idle scopes tracked at once. */
  readonly maxScopes: number;
}

/** Which limit refused a request, and how long until it would admit one. */
export interface LimitRefusal {
  readonly limit: 'in_flight' | 'new_keys';
  readonly retryAfterMs: number;
}

/** One scope's state: its keys in flight, and its new keys per sub-window. */
class ScopeState {
  inFlight = 0;
  /** The sub-window number (time / bucket length) each slot counts; -1 for none. */
  readonly epochs: Float64Array | undefined;
  readonly counts: Uint32Array | undefined;

  constructor(windowed: boolean) {
    this.epochs = windowed ? new Float64Array(BUCKETS).fill(-1) : undefined;
    this.counts = windowed ? new Uint32Array(BUCKETS) : undefined;
  }
}

/**
 * An admitted request's place in flight and its new key. `refund` when the claim did not start a
 * run; `finish` when the run that started ends. Each at most once, and only one of them.
 */
export class LimitTicket {
  #state: ScopeState | undefined;
  readonly #bucket: number;

  constructor(state: ScopeState, bucket: number) {
    this.#state = state;
    this.#bucket = bucket;
  }

  /** The claim did not start a run: the place in flight and the new key are given back. */
  refund(): void {
    const state = this.#state;
    if (state === undefined) return;
    this.#state = undefined;
    state.inFlight--;
    const slot = this.#bucket % BUCKETS;
    // A sub-window that has already left the count has nothing to give back.
    if (state.epochs !== undefined && state.counts !== undefined && state.epochs[slot] === this.#bucket)
      state.counts[slot] = (state.counts[slot] as number) - 1;
  }

  /** The run ended (stored, released, or kept for an unknown outcome): its place in flight is free. */
  finish(): void {
    const state = this.#state;
    if (state === undefined) return;
    this.#state = undefined;
    state.inFlight--;
  }
}

/** Tracks every scope's keys in flight and new keys, in this process. */
export class ScopeLimiter {
  readonly #limits: ScopeLimits;
  readonly #bucketMs: number;
  /** Insertion order is recency: a scope moves to the end when admitted; idle ones are forgotten from the front. */
  readonly #scopes = new Map<string, ScopeState>();

  constructor(limits: ScopeLimits) {
    this.#limits = limits;
    this.#bucketMs = limits.newKeys === undefined ? 1 : Math.max(1, limits.newKeys.windowMs / BUCKETS);
  }

  /** How many scopes are tracked now. */
  get size(): number {
    return this.#scopes.size;
  }

  /** A ticket for one more key of `scope`, or the limit that refuses it. Touches no store. */
  admit(scope: string, now: number = Date.now()): LimitTicket | LimitRefusal {
    const { inFlight, newKeys } = this.#limits;
    const scopes = this.#scopes;
    let state = scopes.get(scope);
    if (state === undefined) {
      // Two at most: one makes room, the other shrinks a map that grew past the bound while busy.
      if (scopes.size >= this.#limits.maxScopes && this.#forgetOne() && scopes.size >= this.#limits.maxScopes)
        this.#forgetOne();
      state = new ScopeState(newKeys !== undefined);
    } else {
      scopes.delete(scope);
    }
    scopes.set(scope, state);
    // A place in flight frees when some run ends, which nothing here can predict: a second is the
    // hint a duplicate gets for a key in flight, too.
    if (inFlight !== undefined && state.inFlight >= inFlight) return { limit: 'in_flight', retryAfterMs: 1_000 };
    const bucket = Math.floor(now / this.#bucketMs);
    const { epochs, counts } = state;
    if (newKeys !== undefined && epochs !== undefined && counts !== undefined) {
      let used = 0;
      let oldest = bucket;
      for (let slot = 0; slot < BUCKETS; slot++) {
        const epoch = epochs[slot] as number;
        if (epoch > bucket - BUCKETS && (counts[slot] as number) > 0) {
          used += counts[slot] as number;
          if (epoch < oldest) oldest = epoch;
        }
      }
      if (used >= newKeys.max) {
        // The oldest sub-window still counted leaves the count first, and with it at least one key.
        return { limit: 'new_keys', retryAfterMs: Math.max(1, (oldest + BUCKETS) * this.#bucketMs - now) };
      }
      const slot = bucket % BUCKETS;
      if (epochs[slot] !== bucket) {
        epochs[slot] = bucket;
        counts[slot] = 0;
      }
      counts[slot] = (counts[slot] as number) + 1;
    }
    state.inFlight++;
    return new LimitTicket(state, bucket);
  }

  /**
   * Forgets the least recently admitted scope with no key in flight. A scope with keys in flight is
   * never forgotten: its count must come back down when its runs end, or it would admit more than
   * its limit. The busy scopes passed on the way are moved to the back, so the next look starts at
   * idle ones: the map grows past `maxScopes` only by scopes with keys in flight (requests this
   * process holds anyway), and shrinks back as new scopes arrive. False when none was forgotten.
   */
  #forgetOne(): boolean {
    const scopes = this.#scopes;
    const busy: [string, ScopeState][] = [];
    let forgot = false;
    for (const entry of scopes) {
      if (entry[1].inFlight === 0) {
        scopes.delete(entry[0]);
        forgot = true;
        break;
      }
      busy.push(entry);
      if (busy.length >= EVICTION_SCAN) break;
    }
    for (const [scope, state] of busy) {
      scopes.delete(scope);
      scopes.set(scope, state);
    }
    return forgot;
  }
}
