/**
 * The event loop's check phase, where the stores send the operations gathered in one turn: the
 * SQLite store's reads and writes, the Redis store's commands, the PostgreSQL store's statements.
 *
 * Taken when idempo is loaded: a test that fakes timers afterwards (`vi.useFakeTimers()`,
 * `jest.useFakeTimers()`) must not hold every operation of a store until it advances them
 * (test/stores/fake-timers.test.ts). Waits that are durations (a pause behind another
 * connection's lock, leases, sweeps) keep the global timers, which such a test means to control.
 *
 * @module
 */

/** `setImmediate` as it was when idempo was loaded. */
export const atCheckPhase = setImmediate;

/** `clearImmediate` as it was when idempo was loaded, for what {@link atCheckPhase} scheduled. */
export const cancelCheckPhase = clearImmediate;
