/** A free loopback port below Linux's ephemeral range; with `bus`, port + 10000 is free too. See ports.js. */
export function freePort(options?: { bus?: boolean }): Promise<number>;
