/**
 * Batches the Redis store's socket writes: every command issued in one turn of the event loop
 * leaves in one write.
 *
 * @module
 */
import type { Writable } from 'node:stream';
import { atCheckPhase } from './check-phase.js';

/** A connection whose socket the store may cork: an ioredis `Redis`, standalone or a Cluster's node. */
interface WithStream {
  stream?: Writable;
}

/**
 * Returns a function that holds the client's socket writes until the event loop's check phase.
 * ioredis writes each command to the socket at once, one system call and one wake-up of Redis
 * per command. Corked until `setImmediate`, every command issued while the loop handles one
 * batch of ready sockets (many requests' claims and completions) leaves in one write, and their
 * replies tend to come back in one read, as node-redis batches its writes. See
 * bench/notes/2026-11-24-what-bounds-the-figures.md for the measurements. A Cluster client has a connection per node,
 * and every node's socket is held alike.
 */
export function socketCorker(client: object): () => void {
  const nodes = (client as { nodes?: (role: 'all') => WithStream[] }).nodes;
  let corked: Writable[] | undefined;

  function uncork(): void {
    const streams = corked ?? [];
    corked = undefined;
    for (const stream of streams) stream.uncork();
  }

  function hold(stream: Writable | undefined, into: Writable[]): void {
    if (stream === undefined || typeof stream.cork !== 'function' || stream.writableCorked > 0) return;
    stream.cork();
    into.push(stream);
  }

  return function cork(): void {
    if (corked !== undefined) return;
    corked = [];
    if (typeof nodes === 'function') for (const node of nodes.call(client, 'all')) hold(node.stream, corked);
    else hold((client as WithStream).stream, corked);
    atCheckPhase(uncork);
  };
}
