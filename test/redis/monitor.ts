/**
 * Counts the round trips one Redis connection makes, with MONITOR. Every command appears there
 * with its sender: the client's address for what the client sent, `lua` for what a script ran,
 * so the client's own lines are exactly its round trips, whatever other connections do.
 */
import type { Redis } from 'ioredis';

export interface CommandWatch {
  /** Runs `fn` and returns the commands (lower-case names) `client` sent meanwhile, in order. */
  during(fn: () => Promise<unknown>): Promise<string[]>;
  stop(): void;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Watches `client` through a MONITOR connection opened from `admin` (another connection to the same server). */
export async function watchCommands(admin: Redis, client: Redis): Promise<CommandWatch> {
  const address = /addr=(\S+)/.exec(String(await client.client('INFO')))?.[1];
  if (!address) throw new Error('could not read the client address');
  const monitor = await admin.monitor();
  const seen: string[][] = [];
  monitor.on('monitor', (_time: string, args: string[], source: string) => {
    if (source === address) seen.push(['client', args[0]!.toLowerCase()]);
    else if (args[0]?.toLowerCase() === 'echo') seen.push(['marker', args[1]!]);
  });
  // MONITOR lines arrive asynchronously but in server order: an ECHO from `admin` marks a point.
  let markers = 0;
  const mark = async () => {
    const name = `idempo-mark-${markers++}`;
    await admin.echo(name);
    for (;;) {
      const at = seen.findIndex(([kind, value]) => kind === 'marker' && value === name);
      if (at !== -1) return at;
      await sleep(5);
    }
  };
  return {
    async during(fn) {
      const from = await mark();
      await fn();
      const to = await mark();
      return seen.slice(from + 1, to).map(([, command]) => command!);
    },
    stop() {
      monitor.disconnect();
    },
  };
}
