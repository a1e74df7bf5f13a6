/**
 * Redis's own count of the commands it ran (`INFO commandstats`), for tests that assert how many
 * commands, and which, a store sends: whatever the client library.
 */

/** Calls per command in the text of `INFO commandstats`, leaving out the commands in `ignore`. */
export function commandCallsIn(info: string, ignore: readonly string[]): Record<string, number> {
  const calls: Record<string, number> = {};
  for (const line of info.split('\r\n')) {
    const match = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (match && !ignore.includes(match[1]!)) calls[match[1]!] = Number(match[2]);
  }
  return calls;
}

/** The commands whose count changed between two snapshots, by how much. */
export function delta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, count] of Object.entries(after)) {
    const d = count - (before[name] ?? 0);
    if (d) out[name] = d;
  }
  return out;
}
