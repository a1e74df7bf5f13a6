import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../helpers/servers.js';

// Each store's page has an options table; each store's options interface has TSDoc. These tests
// fail when a store gains, renames or changes the default of an option and its page does not follow.

const STORES = [
  { page: 'memory.md', sources: ['memory.ts'], options: 'MemoryStoreOptions' },
  { page: 'sqlite.md', sources: ['sqlite.ts'], options: 'SqliteStoreOptions' },
  { page: 'redis.md', sources: ['redis.ts'], options: 'RedisStoreOptions' },
  { page: 'postgres.md', sources: ['postgres.ts', 'postgres-migrate.ts'], options: 'PostgresStoreOptions' },
];

interface Option {
  name: string;
  default: string | undefined;
  deprecated: boolean;
}

/** The options of every `interface …Options` block in `source`, with their TSDoc `@default`. */
function optionsIn(source: string): Option[] {
  const found: Option[] = [];
  for (const block of source.matchAll(/export interface \w+Options\b[^{]*\{([\s\S]*?)\n\}/g)) {
    for (const m of (block[1] as string).matchAll(/(\/\*\*[\s\S]*?\*\/)\s*\n\s*(\w+)\??:/g)) {
      const doc = m[1] as string;
      found.push({
        name: m[2] as string,
        default: /@default ([^\n]*)/.exec(doc)?.[1]?.trim(),
        deprecated: doc.includes('@deprecated'),
      });
    }
  }
  return found;
}

/** The rows of the page's options table (headed `| option | default |`) as name → default cell. */
function rowsOf(page: string): Map<string, string> {
  const rows = new Map<string, string>();
  let inTable = false;
  for (const line of page.split('\n')) {
    if (line.startsWith('| option | default |')) inTable = true;
    else if (!line.startsWith('|')) inTable = false;
    const m = inTable ? /^\| `(\w+)` \| ([^|]*) \|/.exec(line) : null;
    if (m) rows.set(m[1] as string, (m[2] as string).trim().replace(/^`|`$/g, ''));
  }
  return rows;
}

describe.each(STORES)('docs/stores/$page', ({ page, sources }) => {
  const rows = rowsOf(readFileSync(join(ROOT, 'docs', 'stores', page), 'utf8'));
  const options = sources.flatMap((file) => optionsIn(readFileSync(join(ROOT, 'src', 'stores', file), 'utf8')));

  it('has a row for every current option, with its TSDoc default', () => {
    const current = options.filter((o) => !o.deprecated);
    expect(current.length).toBeGreaterThan(0);
    for (const option of current) {
      expect(rows.has(option.name), `no row for ${option.name}`).toBe(true);
      if (option.default !== undefined) expect(rows.get(option.name), option.name).toBe(option.default);
    }
  });

  it('names no option the store does not have, and no deprecated one as a row', () => {
    const names = new Set(options.filter((o) => !o.deprecated).map((o) => o.name));
    for (const name of rows.keys()) expect(names.has(name), `${name} is in the table only`).toBe(true);
  });
});
